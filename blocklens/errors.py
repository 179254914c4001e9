"""Errors that carry their context: what was asked for, and what would have been valid.

Every error blocklens raises on bad input is a :class:`BlocklensError` (or a subclass); the command line
prints its message and exits non-zero, never a traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class BlocklensError(Exception):
    """Bad input or an impossible request; the message says what was asked and what would be valid."""


class UnknownNameError(BlocklensError, KeyError):
    """A layer, model or class name that does not exist; the message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CostError(BlocklensError):
    """A request whose work would exceed a documented bound (e.g. too many positions); raised before any work,
    with the bound, the estimate and how to ask for more."""


class ImageError(BlocklensError):
    """A file that cannot be read as an image (missing, not an image, truncated, too large)."""


def closest(name: str, valid: Iterable[str], n: int = 5) -> list[str]:
    """The valid names closest to ``name``: difflib matches first, then names containing it."""
    valid = list(valid)
    found = difflib.get_close_matches(name, valid, n=n, cutoff=0.5)
    low = name.lower()
    for v in valid:
        if len(found) >= n:
            break
        if low and low in v.lower() and v not in found:
            found.append(v)
    return found


def unknown(kind: str, name: str, valid: Iterable[str], hint: str = "") -> UnknownNameError:
    """Build the error for an unknown ``kind`` called ``name``, naming the closest of ``valid``."""
    valid = list(valid)
    near = closest(str(name), valid)
    msg = f"unknown {kind} {name!r}"
    if near:
        msg += "; closest: " + ", ".join(near)
    elif len(valid) <= 12:
        msg += "; valid: " + ", ".join(valid)
    if hint:
        msg += f" ({hint})"
    return UnknownNameError(msg)
