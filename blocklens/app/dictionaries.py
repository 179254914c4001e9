"""The concept dictionaries saved in the store (``bl.concept_dictionary``), in the app (:class:`Dictionaries`): their
listing, and one of them as the page document (``ConceptDictionary.to_json()`` with pictures), held (LRU).

A dictionary is addressed only by its 16-hex key. Its patches and whole images are cut again from the folder it was
learned over, through its model's preprocessing, when that model is one the app serves (the zoo, ``serve --model``)
with the same fingerprint and the folder's images are still there; otherwise the document comes without them (icons
come from the store either way) and says why in ``note``.
"""
from __future__ import annotations

from ..dataset.dictionary import list_dictionaries, load_dictionary
from ..errors import BlocklensError
from ..store import IconStore
from .cache import LRU
from .checks import HEX16, HTTPError, check_address
from .models import ModelPool


class Dictionaries:
    """The store's saved dictionaries; ``held``: an LRU of page documents by key."""

    def __init__(self, store: IconStore, models: ModelPool, *, held: LRU):
        self.store, self.models, self.held = store, models, held

    def listing(self) -> list[dict]:
        """The saved dictionaries, newest first (key, model, layer, folder, method, atoms, images, created)."""
        return list_dictionaries(self.store)

    def _model(self, entry: dict):
        """The model the dictionary was learned with, when the app serves it (same fingerprint), else None and why."""
        try:
            model, _ = self.models.get(entry["model"], "analysis")
        except (BlocklensError, HTTPError) as e:
            return None, f"its model {entry['model']!r} is not served here ({e})"
        if model.fingerprint != entry["fingerprint"]:
            return None, f"the app's {entry['model']!r} is not the model it was learned with (another fingerprint)"
        return model, None

    def document(self, key: str) -> dict:
        """Dictionary ``key`` as the page document (pictures inline); 404 when the store holds no such dictionary."""
        check_address(HEX16, key, "dictionaries are addressed by their 16-hex key (see /api/dictionaries)")
        doc = self.held.get(key)
        if doc is not None:
            return doc
        known = {d["key"]: d for d in self.listing()}
        if key not in known:
            held = ", ".join(list(known)[:8])
            raise HTTPError(404, f"no dictionary {key} in the store" + (f"; it holds {held}" if held else
                                                                       "; it holds none (bl.concept_dictionary)"))
        model, why = self._model(known[key])
        d = load_dictionary(key, self.store, model)
        doc = d.to_json(images=True)
        missing = sum(1 for a in doc["atoms"] for e in a["examples"] if "src" not in e)
        if why or missing:
            doc["note"] = ("no patches or images: " + why if why else
                           f"{missing} patches are missing: their images are not in {d.folder} any more")
        self.held.put(key, doc)
        return doc
