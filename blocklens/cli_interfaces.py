"""Command line for the interfaces: ``explain`` (HTML report) and ``serve`` (local web app)."""
from __future__ import annotations


def add_commands(sub, add_model) -> None:
    """Add this module's subcommands to the ``blocklens`` parser's ``sub``; ``add_model(p)`` adds ``--model``."""
