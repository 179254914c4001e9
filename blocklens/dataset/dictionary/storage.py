"""A dictionary kept in the store, like an index: saved at the end of a run, loaded by its key, listed.

``<store>/dictionaries/<key>/manifest.json`` holds the result's JSON without pictures (atoms, drives, flags,
examples' boxes, quality, options) and ``arrays.npz`` the codebook, the class drops, the per-image peak tables
and the atoms' maps. :func:`load_dictionary` rebuilds a :class:`~.results.ConceptDictionary` (patches cut again
from the folder's images when they are still there; icons from the store).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ...errors import BlocklensError
from ...jobs import npz_bytes, npz_load
from ...store import IconStore
from ..concepts.results import ConceptExample
from .codebook import Codebook
from .results import Atom, ConceptDictionary, Drive
from .rules import DICTIONARY_DIR, DICTIONARY_VERSION

__all__ = ["save_dictionary", "load_dictionary", "list_dictionaries"]


def save_dictionary(d: ConceptDictionary, store: IconStore) -> str:
    """Write ``d`` under its key (arrays first, the manifest last: a manifest means a whole dictionary)."""
    arrays = {"cb_" + k: v for k, v in d.codebook.arrays().items()}
    arrays["class_drops"] = np.asarray(d.class_drops, np.float32)
    for name, v in d.tables.items():
        arrays["t_" + name] = np.asarray(v)
    for a in d.atoms:
        if a.maps is not None and len(a.maps):
            arrays[f"maps_{a.index}"] = a.maps
    store.files.write(f"{DICTIONARY_DIR}/{d.key}/arrays.npz", npz_bytes(arrays))
    manifest = d.to_json(images=False)
    manifest.update({"version": DICTIONARY_VERSION, "created": time.time(), "labels_count": len(d.labels)})
    store.files.write(f"{DICTIONARY_DIR}/{d.key}/manifest.json", json.dumps(manifest).encode())
    return d.key


def _examples(items: list[dict], root: Path, crop_of) -> list[ConceptExample]:
    out = []
    for e in items:
        box = tuple(int(v) for v in e["box"])
        crop = crop_of(e["image"])
        patch = np.asarray(crop.crop(box).convert("RGB")) if crop is not None else None  # the image is gone
        out.append(ConceptExample(image=int(e["image"]), path=e["path"], y=int(e["y"]), x=int(e["x"]),
                                  value=float(e["value"]), centre=tuple(e["centre"]), box=box, patch=patch))
    return out


def load_dictionary(key: str, store: IconStore | str | None = None, model=None) -> ConceptDictionary:
    """The dictionary saved under ``key``; ``model`` (its labels and preprocessing) cuts the example patches again
    from the folder's images."""
    store = store if isinstance(store, IconStore) else IconStore(store)
    m = store.files.read_json(f"{DICTIONARY_DIR}/{key}/manifest.json")
    data = store.files.read(f"{DICTIONARY_DIR}/{key}/arrays.npz")
    if m is None or data is None:
        known = [d["key"] for d in list_dictionaries(store)]
        raise BlocklensError(f"no dictionary {key!r} in {store.url}" + (f"; it holds {', '.join(known[:8])}" if known
                                                                        else "; it holds none (blocklens dictionary FOLDER)"))
    arrays = npz_load(data)
    cb = Codebook.from_arrays({k[3:]: v for k, v in arrays.items() if k.startswith("cb_")})
    root = Path(m["folder"])
    cache: dict = {}

    def crop_of(i: int):
        if model is None or not (root / m["images"][i]).exists():
            return None
        if i not in cache:
            cache[i] = model.prepare(root / m["images"][i])[1]
        return cache[i]

    atoms = []
    for a in m["atoms"]:
        icon = store.get(a["key"]) if a["key"] else None
        atoms.append(Atom(index=a["index"], direction=cb.directions[a["index"]], vector=cb.atoms[a["index"]],
                          examples=_examples(a["examples"], root, crop_of), coverage=a["coverage"], fires=a["fires"],
                          drives=[Drive(**d) for d in a["drives"]], flags=[(f["code"], f["text"]) for f in a["flags"]],
                          location=a["location"], maps=arrays.get(f"maps_{a['index']}"), icon=icon, key=a["key"]))
    labels = list(model.labels) if model is not None else []
    return ConceptDictionary(
        key=m["key"], model=m["model"], fingerprint=m["fingerprint"], layer=m["layer"], folder=m["folder"],
        images=m["images"], method=m["method"], atoms=atoms, quality=m["quality"], codebook=cb, labels=labels,
        class_drops=arrays["class_drops"], options=m["options"], timings=m["timings"],
        tables={k[2:]: v for k, v in arrays.items() if k.startswith("t_")},
        crops=(lambda i: crop_of(i)) if model is not None else None)


def list_dictionaries(store: IconStore | str | None = None, fingerprint: str | None = None) -> list[dict]:
    """The saved dictionaries (newest first): key, model, fingerprint, layer, folder, method, atoms, images."""
    store = store if isinstance(store, IconStore) else IconStore(store)
    out = []
    for rel, _, mtime in store.files.walk(DICTIONARY_DIR):
        if not rel.endswith("/manifest.json"):
            continue
        m = store.files.read_json(rel)
        if not m or (fingerprint is not None and m.get("fingerprint") != fingerprint):
            continue
        out.append({"key": m["key"], "model": m["model"], "fingerprint": m["fingerprint"], "layer": m["layer"],
                    "folder": m["folder"], "method": m["method"], "atoms": len(m["atoms"]),
                    "images": len(m["images"]), "created": m.get("created", mtime)})
    return sorted(out, key=lambda d: -d["created"])
