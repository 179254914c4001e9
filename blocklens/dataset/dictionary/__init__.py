"""The concept dictionary: directions learned over every position of a layer across a folder, no labels needed, each
with its examples, the classes it drives (measured by removal) and flags.

``concept_dictionary(model, "photos/")`` finds what the model sees across a folder and what each of those concepts
does to every class, so that a concept pushing a class nobody asked about (a watermark, a frame, a mark) shows up:

1. *Collect* (one forward pass per image, chunks through the job engine, shards in the store): every position's
   activations at the layer (float16) and each image's top-1 prediction. Every 10th readable image is held out.
2. *Train* on the training images' positions, streaming (a bounded buffer of rows, mini-batches), on the model's
   device: ``nmf`` (online NMF, Mairal et al. 2010) or ``sae`` (a TopK sparse autoencoder with a non-negative
   decoder), both in the layer's non-negative space (``[relu(A), relu(-A)]`` for a signed layer), so each atom
   folds back into a direction of the layer's channel space (:mod:`.train`, :mod:`.codebook`). A second fit from
   ``seed + 1`` measures stability; a PCA of equal size is the baseline.
3. *Survey*: every image encoded on the atoms: per atom its peak and where; the quality on the held-out images
   (explained variance, active atoms per position, dead atoms) beside the PCA's and the channels' (:mod:`.survey`).
4. *Remove* (per image, from the layer on): an atom *fires* on an image when its peak there reaches 25% of its
   99th-percentile peak; on each image the (at most 8) atoms firing most have their exact share of the activations
   removed (:meth:`.codebook.Codebook.shares`) and the rest of the network run. Per atom and class the mean drop
   of the logit, log-probability and probability over the images where it was removed.
5. *Audit* (:mod:`.audit`): each atom's ``drives`` (top classes by mean logit drop) with the share of the drop that
   comes from images not predicted as that class, flips, its top patches and where they sit, and flags: ``cue``
   (raises a class mostly on images of other classes), ``decisive``, ``fixed-location``, ``dead``.

6. *Readability* (optional, :mod:`.readability`): how well a judge model's features tell each atom's top patch from
   its bottom or a random patch given its other top patches (two-alternative trials, Zimmermann et al. 2024), beside
   the same figure for the layer's channels on the same folder.

Modules: :mod:`.rules`, :mod:`.codebook`, :mod:`.chunks` (the work on the workers), :mod:`.train`,
:mod:`.survey`, :mod:`.audit`, :mod:`.phases`, :mod:`.run` (:func:`concept_dictionary`), :mod:`.results`,
:mod:`.storage` (saved like an index, loaded by key), :mod:`.readability`.
"""
from __future__ import annotations

from .codebook import Codebook
from .readability import dictionary_readability
from .results import Atom, ConceptDictionary, Drive
from .rules import DICTIONARY_VERSION
from .run import concept_dictionary
from .storage import list_dictionaries, load_dictionary

__all__ = ["concept_dictionary", "ConceptDictionary", "Atom", "Drive", "Codebook", "load_dictionary",
           "list_dictionaries", "dictionary_readability", "DICTIONARY_VERSION"]
