"""The ``blocklens`` command line: the parser and ``main``; one module per command family, shared options in :mod:`.args`.

Every command has ``--help``; those that print results take ``--json``.

Bad input (a missing file, an unknown layer, a ``--device`` that is not here, ...) prints one line starting
``blocklens: error:`` and exits with status 2; never a traceback. Every command that runs a model takes
``--device`` (:func:`.args.add_device`): auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import BlocklensError
from . import atoms, basic, dataset, interfaces, store
from .args import check_device

EXAMPLES = """\
examples:
  blocklens models                              the models you can load
  blocklens layers --model efficientnet_lite0   every layer with its shape
  blocklens classify chelsea                    a bundled photo (or any image path)
  blocklens classify cat.jpg dog.png --top 3 --json
  blocklens vis blocks.9:12 blocks.9:12@7,7 "logit:tiger cat" --out vis/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blocklens",
        description="Make the hidden layers of PyTorch vision models readable: feature visualization, "
                    "semantic dictionaries, activation grids, attribution and neuron groups.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"blocklens {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    basic.add_commands(sub)  # models, layers, classify, vis
    interfaces.add_commands(sub)  # explain, serve
    store.add_commands(sub)  # precompute, store info|verify|export
    dataset.add_commands(sub)  # index, atlas
    atoms.add_commands(sub)  # dictionary
    return parser


def _version() -> str:
    from ..version import __version__

    return __version__


def _plain_warnings() -> None:
    """Our own warnings (random weights) as one ``blocklens: warning:`` line on stderr, others as usual."""
    import warnings

    from ..models.spec import RandomWeightsWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RandomWeightsWarning):
            print(f"blocklens: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", RandomWeightsWarning)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    import warnings

    try:
        with warnings.catch_warnings():
            _plain_warnings()
            check_device(args)  # a --device that is not here fails before any work
            return args.func(args)
    except BlocklensError as e:
        print(f"blocklens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blocklens: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
