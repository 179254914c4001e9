"""The rules of class concepts: the k tried, what counts as stable, important, at one place or at the border."""
from __future__ import annotations


#: Bumped whenever what a shard holds or how it is computed changes.
CONCEPTS_VERSION = 1
CONCEPTS_DIR = "concepts"
KS = tuple(range(2, 9))           # the k tried when none is given
FLOOR = 0.01                      # every position keeps this share of the mean |evidence| as its sampling weight
STABLE = 0.85                     # a k counts as stable when each concept reappears (cosine) on resampled images
BORDER = 0.125                    # the border band: this fraction of the input's side from any edge
SPREAD = 0.1                      # a concept's top patches "sit at one place" within this fraction of the side
OTHER = 0.8                       # peak on other classes / peak on the class at or above this: "fires on others"
K_RULE = (f"the largest k (of {KS[0]}..{KS[-1]}) whose every concept reappears (mean best cosine >= {STABLE}) in "
          "the concepts fitted on three random 80% of the images")
IMPORTANT = 0.5                   # importance at or above this share of the top concept's, and
IMPORTANT_MIN = 0.05              # at least this mean probability drop: "important"
LOCATED_MIN = 4                   # the location flags need at least this many top patches (images) to say anything


