"""The store's error and warning types."""
from __future__ import annotations

from ..errors import BlocklensError


class InvalidIconError(BlocklensError, ValueError):
    """An image, key, metadata or file path the store refuses; the message says what was found and what is valid."""


class CorruptIconWarning(UserWarning):
    """An entry on disk was unreadable or failed its checksum; it was moved aside and must be re-rendered."""
