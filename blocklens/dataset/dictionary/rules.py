"""The rules of a concept dictionary: defaults, what counts as firing, dead, driving a class, a cue."""
from __future__ import annotations

#: Bumped whenever what a shard holds or how it is computed changes.
DICTIONARY_VERSION = 2
DICTIONARY_DIR = "dictionaries"
METHODS = ("nmf", "sae")
DEFAULT_ATOMS = 32                # atoms when none are asked for (see README "A dictionary of concepts")
HOLDOUT = 10                      # every HOLDOUT-th readable image is held out of training (quality is measured there)
ACTIVE = 1e-3                     # an atom is active at a position when its code is above this share of the row's top code
FIRE = 0.25                       # an atom fires on an image when its peak reaches this share of its 99th-percentile peak
REMOVALS = 8                      # at most this many atoms removed per image (those firing most, relative to their p99)
DRIVES = 5                        # classes listed per atom
CUE = 0.5                         # a drive with at least this share of its (positive) log-probability drop on images not
CUE_PROB = 0.05                   # predicted as the class, where its probability drops by CUE_PROB on average: a cue
DECISIVE = 0.5                    # removing the atom flips at least this share of its fired images predicted as the class
DRIVE_MIN = 0.05                  # mean probability drop of the top class for an atom to count as driving it
SPREAD = 0.1                      # top patches centred within this fraction of the side: "at one place"
LOCATED_TOP = 8                   # the location flag looks at this many top patches
