"""What a request's addresses are checked against, and the error a request answers with (:class:`HTTPError`).

A request names things only by these patterns (store keys, ids, index keys, sprite names), so nothing it sends
ever becomes a path; anything else answers 404.
"""
from __future__ import annotations

import re

KEY = re.compile(r"^[0-9a-f]{64}$")  # an icon's store key
ID = re.compile(r"^[0-9a-f]{20}$")  # an explanation's, a job's or class concepts' id
HEX16 = re.compile(r"^[0-9a-f]{16}$")  # an index key; a sprite sheet's recipe hash
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # a fingerprint or a layer in a sprite sheet's address


class HTTPError(Exception):
    """A request that fails with an HTTP ``status``; the app answers ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def check_address(pattern: re.Pattern, value: str | None, message: str) -> str:
    """``value`` when it matches ``pattern``; otherwise a 404 saying ``message`` (how such things are addressed)."""
    if not pattern.match(value or ""):
        raise HTTPError(404, message)
    return value
