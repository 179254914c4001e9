"""The building blocks as ``bl.*`` offers them: each analysis of :mod:`blocklens.analyses`, with its icons on request.

The analyses compute numbers only; these functions take the same arguments and, with ``icons=True``, hand the
result the feature visualizations it shows, through the icon store (:func:`blocklens.icons`: rendered, in batches,
only where missing). ``store``, ``batch``, ``progress`` and recipe options (``size``, ``steps``, ``seed``, ...)
go to :func:`blocklens.icons`.
"""
from __future__ import annotations

from .analyses import attribution, dictionary, groups
from .analyses.attribution import ChannelAttribution
from .analyses.dictionary import SemanticDictionary
from .analyses.groups import NeuronGroups
from .errors import BlocklensError
from .iconcache import icons as get_icons
from .optvis.targets import direction_target

__all__ = ["semantic_dictionary", "channel_attribution", "neuron_groups"]


def semantic_dictionary(model, image, layer: str, top: int = 5, *, icons: bool = False, store=None,
                        batch: int = 8, progress: bool | None = None, **icon_recipe) -> SemanticDictionary:
    """The top-``top`` channels at every position of ``layer`` for ``image``
    (:func:`~blocklens.analyses.dictionary.semantic_dictionary`); with ``icons=True``, every channel that appears
    anywhere gets its icon."""
    result = dictionary.semantic_dictionary(model, image, layer, top)
    if icons:
        used = result.used_channels
        result.icons = dict(zip(used, get_icons(model, result.layer, used, store=store, batch=batch,
                                                progress=progress, **icon_recipe)))
    return result


def channel_attribution(model, image, layer: str, classes, *, icons: bool = False, store=None, method: str = "linear",
                        steps: int = 50, rule: str = "midpoint", tolerance: float | None = None, max_steps: int = 800,
                        top: int = 8, score: str = "logit", **icon_recipe) -> ChannelAttribution:
    """Which channels of ``layer`` decided ``classes`` for ``image``
    (:func:`~blocklens.analyses.attribution.channel_attribution`); with ``icons=True``, the top positive and
    negative channels get their icons."""
    result = attribution.channel_attribution(model, image, layer, classes, method=method, steps=steps, rule=rule,
                                             tolerance=tolerance, max_steps=max_steps, top=top, score=score)
    if icons:
        chans = [c for c, _ in result.positive + result.negative]
        result.icons = dict(zip(chans, get_icons(model, result.layer, chans, store=store, **icon_recipe)))
    return result


def neuron_groups(model, image, layer, n_groups: int = 6, *, icons: bool = False, store=None, classes=None,
                  top: int = 5, seed: int = 0, score: str = "logit", method: str = "linear",
                  **icon_recipe) -> NeuronGroups:
    """Neuron groups of one image at ``layer`` and their attribution to classes
    (:func:`~blocklens.analyses.groups.neuron_groups`; ``seed`` is the factorization's); with ``icons=True``, each
    group's channel direction gets its icon (rendered with the recipe's own seed)."""
    if icon_recipe and not icons:
        raise BlocklensError(f"icon recipe options ({', '.join(sorted(icon_recipe))}) given without icons=True")
    result = groups.neuron_groups(model, image, layer, n_groups, classes=classes, top=top, seed=seed, score=score,
                                  method=method)
    if icons:
        targets = [direction_target(model, result.layer, v) for v in result.channel]
        result.icons = get_icons(model, targets, store=store, **icon_recipe)
    return result
