"""Class concepts: what a model relies on for one class across a folder, found by factorization, measured by removal.

``class_concepts(model, "photos/", "malamute")`` takes the images of the class (a folder with one subfolder per
class, the ImageFolder convention, gives labels; otherwise the model's top-1 prediction does) and:

1. *Scan* (one forward and backward pass per image): the activations ``A`` at the layer, the class's
   log-probability ``s`` and its gradient. From each class image, ``positions`` rows of the non-negative matrix
   (``[relu(A), relu(-A)]`` for a signed layer) are sampled, without replacement, with probability proportional to
   the position's evidence for the class ``max(0, sum_c A * ds/dA) + 0.01 mean |evidence|`` (so the positions the
   class's score rests on are sampled most, and every position can be). The sample's size is stated in the result.
2. *Factorize* the sample with NMF (:func:`~blocklens.analyses.factorize.nmf_matrix`) into ``k`` concepts: each a
   non-negative pattern over channels, its signed fold a direction in the layer's channel space. Without ``k``,
   every ``k`` in ``2..8`` is fitted on the whole sample and on three random 80% of the images; the chosen ``k``
   is the largest whose every concept reappears on the resamples (mean best cosine >= 0.85), so that each concept
   is a property of the class's images rather than of a few of them (the table, with each ``k``'s relative
   reconstruction error, is in ``k_selection``).
3. *Measure* (per image, ``k + 1`` passes from the layer on): each image's concept maps (the non-negative
   loadings of every position on the fixed concepts) and each concept's exact share of the activations
   (:func:`~blocklens.analyses.factorize.split_activations`); the share is removed and the rest of the network
   run. **Importance** = the mean drop of the class's probability over the class's images (the mean drop of its
   log-probability is given too: it is unbounded, so a concept whose removal wrecks a few images can lead it while
   flipping few); **flips** = the share of the class's images predicted as the class whose top-1 prediction
   changes when the concept is removed. Concepts are ranked by importance.

Each concept then has its top dataset patches (per image its peak position, boxes ``(x0, y0, x1, y1)`` in the
model's input frame at the layer's receptive field), its maps over those images, and an audit of where it sits: a
heat map of its peaks' centres over the input frame, the share of its top patches within a border band, how much of
the class it covers, and how strongly it fires on images of other classes. Flags name what was measured.

With ``vs`` (a second class), also the *vocabulary* of the pair over the images of both classes: the channels with
the most evidence for one over the other (linear attribution of ``logit(a) - logit(b)``, averaged over the images
of both), each with the patches where it carried the most evidence for its side (ranked by attribution, not by
activation: "relevance maximization").

Work is split in chunks of images, each kept as a shard in the store (``concepts/<key>/...``) by the job engine
(:func:`blocklens.jobs.run_shards`): a run that is stopped resumes; ``workers`` runs chunks on local processes and
``ray`` on a Ray cluster (as the index). The modules: :mod:`.rules` (thresholds), :mod:`.chunks` (the work on the
workers), :mod:`.factor` (NMF and the choice of k), :mod:`.phases` (scan, measure, audit, vocabulary), :mod:`.run`
(:func:`class_concepts`), :mod:`.results` (what it returns).
"""
from __future__ import annotations

from ..folders import folder_labels
from .chunks import MeasureChunk, ScanChunk, measure_chunk, scan_chunk
from .factor import choose_k, factorize
from .phases import check_request, check_run
from .results import ClassConcepts, Concept, ConceptExample
from .rules import CONCEPTS_VERSION
from .run import class_concepts

__all__ = ["ClassConcepts", "Concept", "ConceptExample", "class_concepts", "folder_labels", "check_request", "check_run",
           "choose_k", "factorize", "scan_chunk", "measure_chunk", "ScanChunk", "MeasureChunk", "CONCEPTS_VERSION"]
