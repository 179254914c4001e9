"""The icon store: keys, round trips, corruption detection, atomic writes, concurrent writers.

The tests taking ``store`` run twice, on a local folder and on a ``memory://`` store (the same code path); those
taking ``local`` check what only a local folder does (os.replace, fsync, other processes)."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from blocklens.errors import BlocklensError
from blocklens.store import (
    CHUNK,
    RECIPE_VERSION,
    CorruptIconWarning,
    FileInfo,
    Icon,
    IconStore,
    InvalidIconError,
    default_root,
    direction_hash,
    icon_key,
    to_pixels,
)

RECIPE = {"size": 64, "steps": 128, "lr": 0.05, "seed": 0, "param": "fft", "transforms": ["jitter:8", "scale"]}


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    """Never touch the real cache: any IconStore() without a root lands in this test's tmp_path."""
    monkeypatch.setenv("BLOCKLENS_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path) -> IconStore:
    """An empty store: a local folder, or a memory:// one."""
    if request.param == "local":
        return IconStore(tmp_path / "cache")
    return IconStore(request.getfixturevalue("memory_url"))


@pytest.fixture
def local(tmp_path) -> IconStore:
    return IconStore(tmp_path / "cache")


# The tests reach behind the store through its file system (os calls on a local folder, the same ones as
# Path.read_bytes & co.; the memory dict for memory://), never through the store's own code.

def _p(store: IconStore, where) -> str:
    """The path on store.fs of a Path or URL the store gave."""
    return store.fs._strip_protocol(str(where))


def _read(store: IconStore, where) -> bytes:
    return store.fs.cat_file(_p(store, where))


def _write(store: IconStore, where, data: bytes) -> None:
    path = _p(store, where)
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(path, data)


def _exists(store: IconStore, where) -> bool:
    return store.fs.exists(_p(store, where))


def _names(store: IconStore, where) -> list[str]:
    """Names of the files in the folder ``where`` (none if it does not exist)."""
    path = _p(store, where)
    if not store.fs.isdir(path):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[1] for p in store.fs.ls(path, detail=False))


def _age(store: IconStore, where, seconds: float) -> None:
    """Make a file ``seconds`` old."""
    old = time.time() - seconds
    if store.is_local:
        os.utime(_p(store, where), (old, old))
    else:
        store.fs.store[_p(store, where)].created = dt.datetime.fromtimestamp(old, dt.timezone.utc)


def _img(seed: int = 0, shape=(16, 12, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _key(i: int = 0) -> str:
    return icon_key("fp0123456789abcd", "blocks.3", f"channel:{i}", RECIPE)


# ------------------------------------------------------------------------------------------- keys


def test_key_is_stable_hex_and_ignores_dict_order():
    k = _key()
    assert len(k) == 64 and all(c in "0123456789abcdef" for c in k)
    assert k == _key()
    shuffled = dict(reversed(list(RECIPE.items())))
    assert icon_key("fp0123456789abcd", "blocks.3", "channel:0", shuffled) == k
    assert icon_key("fp0123456789abcd", "blocks.3", "channel:0", RECIPE, version=RECIPE_VERSION) == k


def test_key_depends_on_every_input():
    base = ("fp0123456789abcd", "blocks.3", "channel:0", RECIPE)
    k = icon_key(*base)
    variants = [
        icon_key("fp0123456789abce", *base[1:]),
        icon_key(base[0], "blocks.4", *base[2:]),
        icon_key(base[0], base[1], "channel:1", base[3]),
        icon_key(base[0], base[1], "neuron:0@3,4", base[3]),
        icon_key(*base, version=RECIPE_VERSION + 1),
    ]
    for field, value in [("size", 65), ("steps", 129), ("lr", 0.051), ("seed", 1), ("param", "pixel"),
                         ("transforms", ["jitter:8"]), ("extra", None)]:
        variants.append(icon_key(*base[:3], {**RECIPE, field: value}))
    variants.append(icon_key(*base[:3], {**RECIPE, "size": 64.0}))  # floats and ints as given
    assert k not in variants
    assert len(set(variants)) == len(variants)


def test_key_rejects_bad_inputs():
    with pytest.raises(ValueError, match="layer"):
        icon_key("fp", "", "channel:0", {})
    with pytest.raises(ValueError, match="recipe must be a dict"):
        icon_key("fp", "l", "channel:0", [1, 2])
    with pytest.raises(ValueError, match="JSON"):
        icon_key("fp", "l", "channel:0", {"x": object()})
    with pytest.raises(ValueError, match="JSON"):
        icon_key("fp", "l", "channel:0", {"lr": float("nan")})


def test_direction_hash_stable_and_sensitive():
    v = np.linspace(-1, 1, 32, dtype=np.float32)
    h = direction_hash(v)
    assert len(h) == 16 and int(h, 16) >= 0
    assert direction_hash(v.copy()) == h
    assert direction_hash(v.astype(np.float64)) == h
    assert direction_hash(torch.from_numpy(v.copy())) == h
    assert direction_hash(torch.from_numpy(v.copy()).requires_grad_()) == h
    assert direction_hash(v[::-1].copy()[::-1]) == h  # negative strides / non-contiguous
    w = v.copy()
    w[5] = np.nextafter(w[5], np.float32(2))
    assert direction_hash(w) != h
    assert direction_hash(v[:-1]) != h
    assert direction_hash(v.reshape(4, 8)) != h
    assert direction_hash(np.zeros(3)) == direction_hash(-np.zeros(3))
    with pytest.raises(ValueError):
        direction_hash(np.zeros(0))


# ------------------------------------------------------------------------------------- round trip


def test_put_get_round_trip(store):
    key = _key()
    img = _img()
    assert store.get(key) is None and key not in store and len(store) == 0
    assert not _exists(store, store.root)  # created lazily
    path = store.put(key, img, {"layer": "blocks.3", "unit": "channel:0", "recipe": RECIPE, "loss": 1.5})
    if store.is_local:
        assert path == store.path_for(key) == store.root / "icons" / key[:2] / f"{key}.png"
    else:
        assert path == store.path_for(key) == f"{store.url}/icons/{key[:2]}/{key}.png"
    assert store.fs.isfile(_p(store, path))
    icon = store.get(key)
    assert isinstance(icon, Icon) and icon.key == key
    assert icon.image.dtype == np.uint8 and icon.image.shape == img.shape
    np.testing.assert_array_equal(icon.image, img)
    assert icon.meta["recipe"] == RECIPE and icon.meta["loss"] == 1.5 and icon.meta["unit"] == "channel:0"
    assert icon.meta["key"] == key and "created" in icon.meta
    assert icon.to_pil().mode == "RGB" and icon.to_pil().size == (12, 16)
    assert key in store and store.exists(key)
    assert list(store.keys()) == [key] and len(store) == 1
    assert store.verify() == {"ok": 1, "corrupt": []}


def test_put_overwrites_and_rgba(store):
    key = _key()
    store.put(key, _img(1))
    rgba = _img(2, (9, 7, 4))
    store.put(key, Image.fromarray(rgba))
    icon = store.get(key)
    np.testing.assert_array_equal(icon.image, rgba)
    assert icon.to_pil().mode == "RGBA" and len(store) == 1


def test_input_conversions():
    img = _img(3, (5, 6, 3))
    f = img.astype(np.float32) / 255.0
    np.testing.assert_array_equal(to_pixels(f), img)
    np.testing.assert_array_equal(to_pixels(np.moveaxis(f, -1, 0)), img)  # CHW float
    np.testing.assert_array_equal(to_pixels(torch.from_numpy(np.moveaxis(f, -1, 0)).requires_grad_()), img)
    np.testing.assert_array_equal(to_pixels(torch.from_numpy(np.moveaxis(img, -1, 0))[None]), img)  # 1CHW
    np.testing.assert_array_equal(to_pixels(Image.fromarray(img)), img)
    clipped = to_pixels(np.full((2, 2, 3), 1.7))
    assert (clipped == 255).all() and (to_pixels(np.full((2, 2, 3), -0.3)) == 0).all()
    assert (to_pixels(np.full((2, 2, 3), 0.5)) == 128).all()  # round(127.5) half to even -> 128
    assert to_pixels(Image.new("L", (4, 3))).shape == (3, 4, 3)


@pytest.mark.parametrize("bad, found", [
    (np.zeros((4, 4), np.uint8), r"\(4, 4\)"),
    (np.zeros((5, 5, 2), np.uint8), r"\(5, 5, 2\)"),
    (np.zeros((5, 4, 4, 3), np.uint8), r"\(5, 4, 4, 3\)"),
    (np.zeros((0, 4, 3), np.uint8), r"\(0, 4, 3\)"),
    (np.zeros((4, 4, 3), np.int64), "int64"),
    (np.zeros((4, 4, 3), bool), "bool"),
    (np.full((4, 4, 3), np.nan), "NaN"),
])
def test_invalid_images_raise_valueerror(store, bad, found):
    with pytest.raises(ValueError, match=found) as e:
        store.put(_key(), bad)
    if "dtype" not in str(e.value) and "NaN" not in str(e.value):
        assert "(H, W, 3)" in str(e.value)
    assert not store.exists(_key())


def test_invalid_keys_and_meta(store):
    for bad in ["../etc/passwd", "ABC", _key().upper(), _key() + "0", ""]:
        with pytest.raises(ValueError, match="invalid icon key"):
            store.path_for(bad)
        assert bad not in store
    assert 123 not in store
    with pytest.raises(ValueError, match="JSON"):
        store.put(_key(), _img(), {"x": object()})
    with pytest.raises(InvalidIconError, match="meta must be a dict") as e:
        store.put(_key(), _img(), ["x"])
    assert isinstance(e.value, ValueError) and isinstance(e.value, BlocklensError)
    assert len(store) == 0


# ----------------------------------------------------------------------------------- corruption


# Each damage takes an entry file's bytes and returns the damaged bytes (written back by _damage).

def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return os.urandom(300)


def _png(arr: np.ndarray, info: PngImagePlugin.PngInfo | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _alter_pixels(data: bytes) -> bytes:
    """Re-save a valid PNG with one pixel changed, keeping the (now stale) metadata chunk."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        text = im.text[CHUNK]
        arr = np.array(im)
    arr[0, 0, 0] ^= 0xFF
    info = PngImagePlugin.PngInfo()
    info.add_itxt(CHUNK, text)
    return _png(arr, info)


def _no_metadata(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        arr = np.array(im)
    return _png(arr)


def _bad_json(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        arr = np.array(im)
    info = PngImagePlugin.PngInfo()
    info.add_text(CHUNK, "{not json")
    return _png(arr, info)


def _damage(store: IconStore, key: str, damage) -> None:
    path = store.path_for(key)
    _write(store, path, damage(_read(store, path)))


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "decode"),
    (_garbage, "not a PNG"),
    (_alter_pixels, "checksum"),
    (_no_metadata, "metadata"),
    (_bad_json, "JSON"),
])
def test_corrupt_entry_is_detected_moved_aside_and_rerendered(store, damage, reason):
    key = _key()
    path = store.put(key, _img(), {"n": 1})
    _damage(store, key, damage)
    with pytest.warns(CorruptIconWarning, match=key) as rec:
        assert store.get(key) is None
    assert reason in str(rec[0].message)
    assert not _exists(store, path)
    moved = _names(store, store.corrupt_dir)
    assert store.corrupt_dir == (store.root / "icons" / "corrupt" if store.is_local else f"{store.url}/icons/corrupt")
    assert len(moved) == 1 and moved[0].startswith(key + ".") and Path(moved[0]).suffix == ".png"
    assert list(store.keys()) == [] and store.get(key) is None  # gone; no second warning
    img = _img(7)
    store.put(key, img)  # a later put works
    np.testing.assert_array_equal(store.get(key).image, img)


def test_entry_under_wrong_key_is_detected(store):
    k0, k1 = _key(0), _key(1)
    store.put(k0, _img(0))
    _write(store, store.path_for(k1), _read(store, store.path_for(k0)))
    with pytest.warns(CorruptIconWarning, match="key mismatch"):
        assert k1 not in store
    assert store.get(k0) is not None


def test_corrupt_entry_replaced_while_read_is_not_moved_aside(store, monkeypatch):
    """A put that lands between reading a corrupt entry and moving it aside wins: the stamp (inode and mtime on a
    local folder, the bytes elsewhere) no longer matches, so the new entry is read again, not thrown away."""
    key = _key()
    store.put(key, _img(1))
    _damage(store, key, _truncate)
    real = store.files.read_stamped
    calls = []

    def read_then_put(rel, max_bytes):
        got = real(rel, max_bytes)
        if not calls:  # a concurrent writer replaces the entry right after the first read
            store.put(key, _img(2), {"v": "new"})
        calls.append(rel)
        return got

    monkeypatch.setattr(store.files, "read_stamped", read_then_put)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not corrupt in the end: no warning
        icon = store.get(key)
    assert len(calls) == 2 and icon is not None and icon.meta["v"] == "new"
    np.testing.assert_array_equal(icon.image, _img(2))
    assert _names(store, store.corrupt_dir) == [] and list(store.keys()) == [key]


def test_verify_reports_corrupt_entries(store):
    keys = [_key(i) for i in range(5)]
    for i, k in enumerate(keys):
        store.put(k, _img(i))
    _damage(store, keys[1], _truncate)
    _damage(store, keys[2], _garbage)
    _damage(store, keys[4], _alter_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verify reports, it does not warn
        assert store.verify(quarantine=False) == {"ok": 2, "corrupt": sorted([keys[1], keys[2], keys[4]])}
        assert len(store) == 5  # left in place
        report = store.verify()
    assert report == {"ok": 2, "corrupt": sorted([keys[1], keys[2], keys[4]])}
    assert sorted(store.keys()) == sorted([keys[0], keys[3]])
    assert store.verify() == {"ok": 2, "corrupt": []}
    assert len(_names(store, store.corrupt_dir)) == 3


# ------------------------------------------------------------------------------------ atomicity


def test_failed_replace_leaves_nothing(local, monkeypatch):
    store, key = local, _key()

    def boom(src, dst):
        assert Path(src).name.startswith(".tmp-") and Path(src).is_file()  # fully written before the rename
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        store.put(key, _img())
    monkeypatch.undo()
    assert not store.path_for(key).exists()
    assert store.get(key) is None and key not in store
    assert list(store.keys()) == [] and len(store) == 0
    assert os.listdir(store.path_for(key).parent) == []  # temp file removed
    store.put(key, _img())
    assert key in store


def test_failed_write_keeps_old_entry(local, monkeypatch):
    store, key = local, _key()
    old = _img(1)
    store.put(key, old, {"v": "old"})

    def boom(fd):
        raise OSError("simulated disk failure")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="simulated disk failure"):
        store.put(key, _img(2), {"v": "new"})
    monkeypatch.undo()
    icon = store.get(key)
    np.testing.assert_array_equal(icon.image, old)
    assert icon.meta["v"] == "old"
    assert os.listdir(store.path_for(key).parent) == [store.path_for(key).name]


def test_stale_temp_files_ignored_and_cleaned(store):
    key = _key()
    store.put(key, _img())
    shard = str(store.path_for(key)).rsplit("/", 1)[0]
    stale = f"{shard}/.tmp-999-deadbeef.png"
    fresh = f"{shard}/.tmp-998-cafebabe.png"
    _write(store, stale, b"\x89PNG half-written")
    _write(store, fresh, b"\x89PNG in progress")
    _age(store, stale, 7200)
    _write(store, f"{store.corrupt_dir}/{key}.20240101T000000.000000000Z.png", b"x")
    assert list(store.keys()) == [key] and len(store) == 1
    assert store.clean_temp(max_age_s=3600) == 1
    assert not _exists(store, stale) and _exists(store, fresh)
    assert store.clean_temp(max_age_s=0) == 1 and not _exists(store, fresh)
    assert store.verify() == {"ok": 1, "corrupt": []}


# ------------------------------------------------------------------------------------ other files


def test_files_round_trip(store):
    """store.files: what the activation index keeps under <root>/index/, written like entries, never listed as one."""
    f = store.files
    assert f.read("index/abc/manifest.json") is None and f.read_json("index/abc/manifest.json") is None
    assert list(f.walk("index")) == [] and not f.isfile("index/abc/manifest.json")
    f.write("index/abc/manifest.json", b'{"version": 1}')
    f.write("index/abc/shards/000000.npz", b"npz")
    f.write("index/abc/list.json", b"[1, 2]")  # JSON, but not an object
    f.write("index/abc/text.json", b"\xff not utf-8")
    assert f.read("index/abc/shards/000000.npz") == b"npz" and f.read("index/abc") is None
    assert f.read_json("index/abc/manifest.json") == {"version": 1}
    assert f.read_json("index/abc/list.json") is None and f.read_json("index/abc/text.json") is None
    got = sorted(f.walk("index"))
    assert [i.rel for i in got] == ["index/abc/list.json", "index/abc/manifest.json", "index/abc/shards/000000.npz",
                                    "index/abc/text.json"]
    assert all(isinstance(i, FileInfo) and abs(i.mtime - time.time()) < 600 for i in got)
    assert [i.size for i in got] == [6, 14, 3, 11]
    assert [rel for rel, _, _ in f.walk("index/abc/shards")] == ["index/abc/shards/000000.npz"]
    assert sorted(i.rel for i in f.walk("")) == [i.rel for i in got]
    assert f.isfile("index/abc/manifest.json") and not f.isfile("index/abc")
    want = store.root / "index" / "abc" / "manifest.json" if store.is_local else f"{store.url}/index/abc/manifest.json"
    assert f.where("index/abc/manifest.json") == want and f.where() == store.root
    assert f.remove("index/abc/list.json") and not f.remove("index/abc/list.json")
    assert f.read("index/abc/list.json") is None
    f.write("index/abc/manifest.json", b'{"version": 2}')  # replaced whole
    assert f.read_json("index/abc/manifest.json") == {"version": 2}
    assert not [i for i in f.walk("") if i.rel.rsplit("/", 1)[1].startswith(".tmp-")]
    assert list(store.keys()) == [] and store.info()["entries"] == 0 and store.info()["temp_files"] == 0


@pytest.mark.parametrize("bad, why", [
    ("/etc/passwd", "absolute"),
    ("../outside", "'..'"),
    ("index/../../outside", "'..'"),
    ("index//x", "empty name"),
    ("index/x/", "empty name"),
    ("./x", "'.'"),
    ("", "empty"),
    ("index\\..\\x", "'\\\\'"),
    ("C:/x", "':'"),
    ("index/*", "'*'"),
    ("a\0b", "'\\x00'"),
])
def test_files_refuse_paths_that_could_leave_the_root(store, bad, why):
    f = store.files
    calls = [lambda: f.read(bad), lambda: f.read_json(bad), lambda: f.write(bad, b"x"), lambda: f.remove(bad),
             lambda: f.isfile(bad), lambda: f.move("index/a", bad), lambda: f.move(bad, "index/a")]
    if bad:  # "" is the root itself for walk() and where()
        calls += [lambda: list(f.walk(bad)), lambda: f.where(bad)]
    for call in calls:
        with pytest.raises(InvalidIconError, match=re.escape(f"invalid store file path {bad!r}")) as e:
            call()
        assert why in str(e.value) and "relative path of '/'-separated names" in str(e.value)
        assert isinstance(e.value, BlocklensError) and isinstance(e.value, ValueError)
    with pytest.raises(InvalidIconError, match="must be a str, got PosixPath|must be a str, got WindowsPath"):
        f.read(Path("index/x"))
    assert not _exists(store, store.root)  # nothing was written anywhere


# ---------------------------------------------------------------------------------- concurrency


def _writer(root: str, worker: int, n: int, barrier) -> None:
    """Put n shared keys and n keys of this worker's own, as fast as possible."""
    store = IconStore(root)
    if barrier is not None:
        barrier.wait(timeout=60)
    for i in range(n):
        store.put(_key(i), _img(i), {"writer": worker})
        store.put(_key(1000 * (worker + 1) + i), _img(1000 + i), {"writer": worker})


def _check_all(store: IconStore, workers: int, n: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(n):
            icon = store.get(_key(i))
            assert icon is not None
            np.testing.assert_array_equal(icon.image, _img(i))
            assert icon.meta["writer"] in range(workers)
            for w in range(workers):
                mine = store.get(_key(1000 * (w + 1) + i))
                assert mine is not None and mine.meta["writer"] == w
                np.testing.assert_array_equal(mine.image, _img(1000 + i))
    assert len(store) == n * (workers + 1)
    assert store.verify() == {"ok": n * (workers + 1), "corrupt": []}
    leftovers = [p for p in store.fs.find(_p(store, store.icons_dir)) if p.rsplit("/", 1)[1].startswith(".tmp-")]
    assert leftovers == []


def test_concurrent_threads(store):
    workers, n = 4, 20
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def run(w):
        try:
            _writer(str(store.root), w, n, barrier)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    _check_all(store, workers, n)


# The child processes load blocklens.store under a stub `blocklens` package so that they do not pay seconds
# importing torch (blocklens/__init__); they are plain, independent interpreters, like two CLI runs.
_CHILD = r"""
import json, os, sys, time, types
src, root, worker, n, go, recipe = sys.argv[1:]
pkg = types.ModuleType("blocklens"); pkg.__path__ = [src]; sys.modules["blocklens"] = pkg
import numpy as np
from blocklens.store import IconStore, icon_key
worker, n, recipe = int(worker), int(n), json.loads(recipe)
key = lambda i: icon_key("fp0123456789abcd", "blocks.3", f"channel:{i}", recipe)
img = lambda s: np.random.default_rng(s).integers(0, 256, size=(16, 12, 3), dtype=np.uint8)
store = IconStore(root)
deadline = time.time() + 60
while not os.path.exists(go):
    if time.time() > deadline:
        sys.exit("never told to start")
    time.sleep(0.001)
for i in range(n):
    store.put(key(i), img(i), {"writer": worker})
    store.put(key(1000 * (worker + 1) + i), img(1000 + i), {"writer": worker})
"""


def test_concurrent_processes(local, tmp_path):
    import blocklens

    store = local
    workers, n = 2, 20
    src = str(Path(blocklens.__file__).parent)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, src, str(store.root), str(w), str(n), str(go),
                               json.dumps(RECIPE)], stderr=subprocess.PIPE, text=True) for w in range(workers)]
    time.sleep(0.3)  # let both interpreters start, then release them together
    go.touch()
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, errs
    _check_all(store, workers, n)


def test_reader_during_writes_never_sees_partial(store):
    """A reader polling the key while a writer keeps replacing it sees a valid icon or nothing, never corrupt."""
    key = _key()
    stop = threading.Event()

    def write():
        i = 0
        while not stop.is_set():
            store.put(key, _img(i % 3, (32, 32, 3)))
            i += 1

    t = threading.Thread(target=write)
    t.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            deadline = time.time() + 0.5
            while time.time() < deadline:
                store.get(key)
    finally:
        stop.set()
        t.join(10)
    assert store.verify() == {"ok": 1, "corrupt": []}


# ---------------------------------------------------------------------------------- default root


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOCKLENS_CACHE", str(tmp_path / "bl"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "bl"
    assert IconStore().root == tmp_path / "bl"
    monkeypatch.delenv("BLOCKLENS_CACHE")
    assert default_root() == tmp_path / "xdg" / "blocklens"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG spec requires
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "blocklens"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_root() == tmp_path / "home" / ".cache" / "blocklens"
    monkeypatch.setenv("BLOCKLENS_CACHE", str(tmp_path / "bl2"))
    store = IconStore()
    store.put(_key(), _img())
    assert (tmp_path / "bl2" / "icons" / _key()[:2] / f"{_key()}.png").is_file()
    assert not (tmp_path / "home").exists()
