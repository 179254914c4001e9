"""The icon store: a content-addressed cache of rendered feature-visualization images ("icons").

Rendering an icon (optimizing an input image for a channel, neuron, direction or logit) takes seconds to
minutes; the store keeps the result so the same request is rendered once. A store is a local directory (the
default) or any `fsspec <https://filesystem-spec.readthedocs.io>`_ URL: ``IconStore("memory://cache")``
(tests), ``IconStore("s3://bucket/blocklens")`` (needs ``s3fs``), ``IconStore("gs://bucket/blocklens")``
(needs ``gcsfs``), ``IconStore("az://container/blocklens")`` (needs ``adlfs``), ``sftp://``, ...; options for
the file system (credentials, endpoints) go in ``storage_options``.

Layout
------
::

    <root>/                         default_root(): $BLOCKLENS_CACHE, $XDG_CACHE_HOME/blocklens or ~/.cache/blocklens
      icons/
        3f/3fa9...e1.png            one PNG per entry, at icons/<key[:2]>/<key>.png
        3f/.tmp-1234-9c1d...png     a write in progress (or left by a crash); never read, see clean_temp()
        corrupt/<key>.<stamp>.png   entries found corrupt, moved aside for inspection
      sprites/
        <fingerprint>/<layer>/<recipe hash>.json              a sprite sheet's index (see put_sprite())
        <fingerprint>/<layer>/<recipe hash>-<png sha>.png     the sheet it names

Each PNG carries its own metadata: an iTXt chunk named ``blocklens`` holds the JSON
``{"format": 1, "key": ..., "shape": [H, W, C], "sha256": ..., "meta": {...}}`` where ``sha256`` is the
digest of the shape and the raw uint8 pixel bytes (:func:`pixel_checksum`), and ``meta`` the caller's
metadata plus ``"key"`` and ``"created"`` (UTC, ISO 8601), both set by the store.

The key
-------
:func:`icon_key` is the sha256 hex digest of a canonical JSON (sorted keys, compact separators, ASCII) of
everything that determines the pixels: the model fingerprint, the layer, the unit (``"channel:5"``,
``"neuron:5@3,4"``, ``"direction:<direction_hash>"``, ``"logit:282"``), the recipe (size, steps, lr, seed,
parametrization, transforms... any JSON dict; ``1`` and ``1.0`` are different recipes) and
:data:`RECIPE_VERSION`, bumped whenever the rendering algorithm changes so that old icons are not reused.
Keys are 64 lowercase hex characters; anything else is refused with :class:`ValueError` (so a key can
never name a path outside the store).

Atomicity
---------
:meth:`IconStore.put` encodes the whole PNG in memory first, then writes it so that a reader sees the old
entry or the new one under the final name, never a partial file:

- a local directory: to a uniquely named temporary file (``.tmp-<pid>-<random>.png``) in the entry's own
  directory, flushed and fsynced, then ``os.replace``-d onto the final name (an atomic rename on POSIX and
  Windows), then the directory is fsynced where the platform allows; a failed put removes its temporary file.
- an object store (``s3``, ``gs``/``gcs``, ``az``/``abfs``, ``oss``, ``r2``, and ``memory``): one whole-object
  write of the final name (``fs.pipe_file``); object stores make an object visible only once it is complete.
- any other fsspec file system (``sftp``, ``ftp``, ``hdfs``, a ``LocalFileSystem`` passed as ``fs=``...):
  the temporary name first, then ``fs.mv`` onto the final name, a rename wherever the file system has one.
  ``write_mode="pipe"`` or ``"rename"`` overrides the choice.

A process killed at any moment (``kill -9``) therefore leaves either no entry or a complete one; at most a
stale temporary file, which :meth:`~IconStore.keys` ignores and :meth:`IconStore.clean_temp` removes. Two
processes putting the same key both succeed and the last write wins; both wrote a valid entry, so either
outcome is correct. Sprite sheets and the activation index's files use the same writes (see
:meth:`IconStore.put_sprite` and :attr:`IconStore.files`).

Corruption
----------
:meth:`IconStore.get` reads the file, decodes the PNG fully (chunk CRCs included), recomputes the pixel
checksum and compares it and the key with the stored ones. A file that is truncated, not a PNG, has
missing or unreadable metadata, the wrong key, or pixels that do not match the checksum is moved aside
to ``icons/corrupt/`` (deleted if it cannot be moved), a :class:`CorruptIconWarning` naming the key and
the reason is emitted, and ``None`` is returned so that the caller re-renders and puts the icon again.
Before moving a file aside the store checks that it is still the file it read (same inode and mtime on a
local disk, same bytes elsewhere), so a concurrent put that just replaced it is not thrown away.
:meth:`IconStore.verify` runs the same check over every entry.

``key in store`` performs that same full verification (equivalent to ``store.get(key) is not None``);
:meth:`IconStore.exists` is the cheap existence check, and ``len(store)``/:meth:`IconStore.keys` list the
entry files without decoding them.

Other files
-----------
``store.files`` (:class:`StoreFiles`) reads, writes (atomically, as above), lists and removes any file by its
'/'-separated path under the root: the activation index keeps ``index/<key>/...`` there. A path that could
leave the root (absolute, with an empty, ``.`` or ``..`` name, a backslash, a colon, a glob character) is
refused with :class:`InvalidIconError`.

Modules
-------
``keys`` (keys and hashes), ``entries`` (the entry PNG, :class:`Icon`, :func:`to_pixels`), ``files`` (the one
storage path: local folders and fsspec URLs), ``sprites`` (sprite sheets), ``iconstore`` (:class:`IconStore`),
``errors``. Everything public is importable from ``blocklens.store``.
"""
from __future__ import annotations

from .entries import CHUNK, FORMAT_VERSION, MAX_ENTRY_BYTES, MAX_META_BYTES, Icon, ImageInput, to_pixels
from .errors import CorruptIconWarning, InvalidIconError
from .files import OBJECT_STORE_PROTOCOLS, TEMP_PREFIX, FileInfo, StoreFiles, check_rel, default_root
from .iconstore import IconStore
from .keys import RECIPE_VERSION, direction_hash, icon_key, layer_slug, pixel_checksum, recipe_hash
from .sprites import SPRITE_FORMAT, SPRITES_DIR

__all__ = [
    "CHUNK",
    "FORMAT_VERSION",
    "MAX_ENTRY_BYTES",
    "MAX_META_BYTES",
    "OBJECT_STORE_PROTOCOLS",
    "RECIPE_VERSION",
    "SPRITES_DIR",
    "SPRITE_FORMAT",
    "TEMP_PREFIX",
    "CorruptIconWarning",
    "FileInfo",
    "Icon",
    "IconStore",
    "ImageInput",
    "InvalidIconError",
    "StoreFiles",
    "check_rel",
    "default_root",
    "direction_hash",
    "icon_key",
    "layer_slug",
    "pixel_checksum",
    "recipe_hash",
    "to_pixels",
]
