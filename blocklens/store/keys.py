"""What names an entry: RECIPE_VERSION, icon keys, direction and recipe hashes, layer slugs, the pixel checksum."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np

from .errors import InvalidIconError

#: Bump when the rendering algorithm changes, so icons rendered by the old one are not reused.
RECIPE_VERSION = 3  # 2: objectives on capped layers keep their gradient past the cap; 3: the rescue returns while an image is stuck

#: An icon key: 64 lowercase hex characters (see icon_key()).
KEY_RE = re.compile(r"^[0-9a-f]{64}$")


def canonical_json(obj: Any, what: str) -> str:
    """``obj`` as canonical JSON (sorted keys, compact separators, ASCII, no NaN); ``what`` names it in the error."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidIconError(f"{what} must be JSON-serializable (dicts with str keys, lists, str, int, "
                               f"finite float, bool, None): {e}") from None


def icon_key(model_fingerprint: str, layer: str, unit: str, recipe: dict, version: int = RECIPE_VERSION) -> str:
    """The store key of an icon: sha256 hex digest of a canonical JSON of all inputs.

    ``unit`` names what was visualized: ``"channel:5"``, ``"neuron:5@3,4"``,
    ``"direction:<direction_hash(v)>"``, ``"logit:282"``. ``recipe`` is any JSON dict describing the
    rendering (size, steps, lr, seed, param, transforms...); values are hashed as given, so ``1`` and
    ``1.0`` give different keys. The key is stable across calls, processes and dict key order.
    """
    for name, value in (("model_fingerprint", model_fingerprint), ("layer", layer), ("unit", unit)):
        if not isinstance(value, str) or not value:
            raise InvalidIconError(f"{name} must be a non-empty str, got {value!r}")
    if not isinstance(recipe, dict):
        raise InvalidIconError(f"recipe must be a dict, got {type(recipe).__name__}")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidIconError(f"version must be an int, got {version!r}")
    payload = {"model": model_fingerprint, "layer": layer, "unit": unit, "recipe": recipe, "version": version}
    text = canonical_json(payload, "recipe")
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_key(key: Any) -> str:
    """``key`` if it is an icon key, else :class:`InvalidIconError` (so no key names a path outside the store)."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise InvalidIconError(f"invalid icon key {key!r}: expected 64 lowercase hex characters (see icon_key())")
    return key


def direction_hash(vector: Any) -> str:
    """A short (16 hex) stable hash of a direction vector (torch tensor, numpy array or sequence).

    Hashes the shape and the float32 little-endian bytes, so the same vector gives the same hash whatever
    its original dtype, device or memory layout; ``-0.0`` and ``0.0`` hash alike.
    """
    if hasattr(vector, "detach") and hasattr(vector, "cpu"):  # torch.Tensor, without importing torch here
        vector = vector.detach().cpu().float().numpy()
    try:
        arr = np.asarray(vector, dtype="<f4")
    except (TypeError, ValueError) as e:
        raise InvalidIconError(f"direction must be a numeric vector, got {type(vector).__name__}: {e}") from None
    if arr.size == 0:
        raise InvalidIconError(f"direction must not be empty, got shape {tuple(arr.shape)}")
    arr = np.ascontiguousarray(arr + np.float32(0.0))  # -0.0 -> 0.0
    h = hashlib.sha256()
    h.update(("f4le:" + ",".join(map(str, arr.shape)) + ":").encode("ascii"))
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


def recipe_hash(recipe: dict, version: int = RECIPE_VERSION) -> str:
    """A short (16 hex) hash of a recipe and :data:`RECIPE_VERSION`: names a layer's sprite sheet for that recipe."""
    if not isinstance(recipe, dict):
        raise InvalidIconError(f"recipe must be a dict, got {type(recipe).__name__}")
    text = canonical_json({"recipe": recipe, "version": version}, "recipe")
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def layer_slug(layer: str) -> str:
    """A layer name as one safe path component (``blocks.3`` stays, ``<output>`` becomes ``_output_``)."""
    if not isinstance(layer, str) or not layer:
        raise InvalidIconError(f"layer must be a non-empty str, got {layer!r}")
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", layer)
    return "_" + slug if set(slug) <= {"."} else slug


def pixel_checksum(pixels: np.ndarray) -> str:
    """sha256 of an image's shape and raw uint8 pixel bytes (row-major, HWC)."""
    arr = np.ascontiguousarray(pixels)
    h = hashlib.sha256()
    h.update(("uint8:" + "x".join(map(str, arr.shape)) + ":").encode("ascii"))
    h.update(arr.tobytes())
    return h.hexdigest()
