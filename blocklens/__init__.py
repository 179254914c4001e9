"""blocklens: the building blocks of interpretability for any PyTorch vision model.

>>> import blocklens as bl
>>> model = bl.load_model("efficientnet_lite0")
>>> model.predict(bl.bundled_image("chelsea"), top=3)        # doctest: +SKIP
"""
from .analyses.attribution import ChannelAttribution, SpatialAttribution, spatial_attribution
from .analyses.dictionary import SemanticDictionary
from .analyses.groups import NeuronGroups, group_attribution
from .blocks import channel_attribution, neuron_groups, semantic_dictionary
from .dataset.atlas import ActivationAtlas, activation_atlas
from .dataset.concepts import ClassConcepts, class_concepts
from .dataset.dictionary import (ConceptDictionary, concept_dictionary, dictionary_readability, list_dictionaries,
                                 load_dictionary)
from .dataset.examples import DatasetExamples, dataset_examples
from .dataset.index import ActivationIndex, build_index, load_index
from .dataset.readability import Judge, readability
from .errors import BlocklensError, CostError
from .explain import Explanation, explain
from .iconcache import icons
from .images import bundled_image, load_image
from .models import Model, list_models, load_model, wrap
from .optvis import objectives
from .optvis.grid import ActivationGrid, activation_grid
from .optvis.render import render
from .store import IconStore

from .version import __version__  # noqa: E402

__all__ = ["ActivationAtlas", "ClassConcepts", "class_concepts", "ConceptDictionary", "concept_dictionary",
           "load_dictionary", "list_dictionaries", "dictionary_readability", "readability", "Judge", "ActivationGrid", "ActivationIndex", "DatasetExamples", "activation_atlas", "build_index",
           "dataset_examples", "load_index", "BlocklensError", "ChannelAttribution", "CostError", "Explanation", "IconStore", "Model",
           "NeuronGroups", "SemanticDictionary", "SpatialAttribution", "activation_grid", "bundled_image",
           "channel_attribution", "explain", "group_attribution", "icons", "list_models", "load_image",
           "load_model", "neuron_groups", "objectives", "render", "semantic_dictionary", "spatial_attribution",
           "wrap"]
