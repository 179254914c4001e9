"""Tests on real torchvision / timm architectures (a package, so its conftest and helpers never shadow tests/conftest.py)."""
