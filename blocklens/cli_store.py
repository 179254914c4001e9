"""Command line for the icon store at scale: ``precompute`` and ``store info|verify|export`` (filled in by issue 6)."""
from __future__ import annotations


def add_commands(sub, add_model) -> None:
    """Add this module's subcommands to the ``blocklens`` parser's ``sub``; ``add_model(p)`` adds ``--model``."""
