"""What a BlocklensApp is set to (:class:`Settings`): preset, recipes, rendering, upload caps and cache bounds.

Read by every part of the app; made once, by :class:`~blocklens.app.state.BlocklensApp`, and not changed after.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BlocklensError
from ..recipes import PRESETS, default_preset, preset_options

MAX_UPLOAD_BYTES = 16 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
MAX_JOBS = 256  # finished jobs beyond this many are forgotten, oldest first


@dataclass(frozen=True)
class Settings:
    """``preset`` None: the model's device decides (:func:`~blocklens.recipes.default_preset`); ``icon_recipe`` /
    ``grid_recipe``: single options over the preset's; ``render``: whether missing pictures are rendered (else only
    the store's are shown). The ``max_*`` bounds are those of the caches and of the job registry."""

    preset: str | None = None
    icon_recipe: dict = field(default_factory=dict)
    grid_recipe: dict = field(default_factory=dict)
    render: bool = True
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_upload_pixels: int = MAX_UPLOAD_PIXELS
    max_explanations: int = 16
    max_concepts: int = 8
    max_indexes: int = 8
    max_atlases: int = 16
    max_dictionaries: int = 4
    max_jobs: int = MAX_JOBS

    def __post_init__(self):
        if self.preset is not None and self.preset not in PRESETS:
            raise BlocklensError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")

    def preset_for(self, model) -> str:
        """The preset asked for, or the one of ``model``'s device."""
        return self.preset or default_preset(model)

    def icon_options(self, model) -> dict:
        """The icon options the app renders with for ``model``: its preset's, with :attr:`icon_recipe` on top."""
        return preset_options(self.preset, "icons", model, **self.icon_recipe)
