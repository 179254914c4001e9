"""The icon store behind fsspec: memory:// and other file systems, sprite sheets, info, kill -9 during writes."""
from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from blocklens.store import (
    CorruptIconWarning,
    IconStore,
    InvalidIconError,
    icon_key,
    layer_slug,
    recipe_hash,
)

RECIPE = {"size": 16, "steps": 4, "seed": 0}


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOCKLENS_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def mem(memory_url) -> IconStore:
    return IconStore(memory_url)


def _img(seed: int = 0, shape=(16, 12, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _key(i: int = 0) -> str:
    return icon_key("fp0123456789abcd", "blocks.3", f"channel:{i}", RECIPE)


# ------------------------------------------------------------------------------------------- URLs


def test_memory_round_trip(mem):
    assert not mem.is_local and not mem.shared and mem.write_mode == "pipe"
    assert isinstance(mem.root, str) and mem.url == mem.root and repr(mem) == f"IconStore({mem.url!r})"
    assert mem.get(_key()) is None and len(mem) == 0 and list(mem.keys()) == []
    url = mem.put(_key(), _img(), {"layer": "blocks.3"})
    assert url == mem.path_for(_key()) == f"{mem.url}/icons/{_key()[:2]}/{_key()}.png"
    icon = mem.get(_key())
    np.testing.assert_array_equal(icon.image, _img())
    assert icon.meta["layer"] == "blocks.3" and icon.meta["key"] == _key()
    assert mem.exists(_key()) and _key() in mem and not mem.exists(_key(1))
    mem.put(_key(1), _img(1, (9, 7, 4)))
    assert list(mem.keys()) == sorted([_key(), _key(1)]) and len(mem) == 2
    assert mem.verify() == {"ok": 2, "corrupt": []}
    again = IconStore(mem.url)  # another handle on the same (in-process) memory file system
    np.testing.assert_array_equal(again.get(_key(1)).image, _img(1, (9, 7, 4)))
    info = mem.info()
    assert info["entries"] == 2 and info["entry_bytes"] > 0 and info["backend"] == "memory"
    assert info["temp_files"] == 0 and info["corrupt_files"] == 0 and info["sprites"] == []


def test_memory_corrupt_entry_moved_aside(mem):
    mem.put(_key(), _img())
    fs = mem.fs
    path = fs._strip_protocol(mem.path_for(_key()))
    fs.pipe_file(path, fs.cat_file(path)[:60])
    fs.pipe_file(path.rsplit("/", 1)[0] + "/.tmp-1-abc.png", b"half")  # a write in progress: never listed
    assert list(mem.keys()) == [_key()]
    assert mem.verify(quarantine=False) == {"ok": 0, "corrupt": [_key()]}
    with pytest.warns(CorruptIconWarning, match=_key()) as rec:
        assert mem.get(_key()) is None
    assert "moved aside" in str(rec[0].message)
    assert list(mem.keys()) == [] and mem.info()["corrupt_files"] == 1 and mem.info()["temp_files"] == 1
    assert mem.clean_temp(max_age_s=3600) == 0 and mem.clean_temp(max_age_s=0) == 1
    mem.put(_key(), _img(3))
    np.testing.assert_array_equal(mem.get(_key()).image, _img(3))


def test_file_url_is_the_local_store(tmp_path):
    store = IconStore(f"file://{tmp_path}/s")
    assert store.is_local and store.root == tmp_path / "s" and store.write_mode == "local"
    path = store.put(_key(), _img())
    assert isinstance(path, Path) and path.is_file()
    assert IconStore(tmp_path / "s").get(_key()) is not None


def test_bad_urls_and_options(tmp_path):
    with pytest.raises(InvalidIconError, match="not a URL fsspec knows|file system package"):
        IconStore("nosuchprotocol-xyz://bucket/x")
    with pytest.raises(InvalidIconError, match="write_mode"):
        IconStore(tmp_path, write_mode="pipe")
    with pytest.raises(InvalidIconError, match="write_mode"):
        IconStore("memory://x", write_mode="copy")
    with pytest.raises(InvalidIconError, match="root"):
        IconStore(None, fs=LocalFileSystem())


def test_rename_mode_on_another_file_system(tmp_path, monkeypatch):
    """A file system that is not an object store: temporary name, then fs.mv; a failed move leaves nothing."""
    fs = LocalFileSystem()
    store = IconStore(str(tmp_path / "r"), fs=fs)
    assert store.write_mode == "rename" and not store.is_local and store.url.startswith("file://")
    seen = []
    real_mv = fs.mv

    def mv(src, dst, **kw):
        seen.append((src, dst))
        assert Path(src).name.startswith(".tmp-") and Path(src).read_bytes()[:4] == b"\x89PNG"
        return real_mv(src, dst, **kw)

    monkeypatch.setattr(fs, "mv", mv)
    store.put(_key(), _img())
    assert len(seen) == 1 and seen[0][1].endswith(f"{_key()}.png")
    np.testing.assert_array_equal(IconStore(tmp_path / "r").get(_key()).image, _img())  # same files, local view

    def boom(src, dst, **kw):
        raise OSError("simulated crash during the move")

    monkeypatch.setattr(fs, "mv", boom)
    with pytest.raises(OSError, match="simulated"):
        store.put(_key(1), _img(1))
    assert not store.exists(_key(1)) and list(store.keys()) == [_key()]
    assert not [p for p in (tmp_path / "r").rglob("*") if p.name.startswith(".tmp-")]  # removed on failure
    assert IconStore(str(tmp_path / "p"), fs=fs, write_mode="pipe").write_mode == "pipe"


# ---------------------------------------------------------------------------------------- sprites


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_sprite_round_trip_and_rewrite(kind, tmp_path, mem):
    store = IconStore(tmp_path / "sp") if kind == "local" else mem
    fp, layer = "905d3667865da47c", "blocks.3"
    assert store.sprite(fp, layer, RECIPE) is None and store.sprites() == []
    sheet = _img(5, (32, 48, 3))
    url = store.put_sprite(fp, layer, RECIPE, sheet, {"model": "m", "columns": 3, "units": [{"index": 0}]})
    assert url.endswith(f"sprites/{fp}/blocks.3/{recipe_hash(RECIPE)}.json")
    assert store.sprite_url(fp, layer, RECIPE) == store.sprite_url(fp, layer, recipe_hash(RECIPE)) == url
    assert url == (str(tmp_path / "sp" / "sprites" / fp / "blocks.3" / f"{recipe_hash(RECIPE)}.json") if kind == "local"
                   else f"{mem.url}/sprites/{fp}/blocks.3/{recipe_hash(RECIPE)}.json")
    img, index = store.sprite(fp, layer, RECIPE)
    np.testing.assert_array_equal(np.asarray(img), sheet)
    assert index["layer"] == layer and index["recipe"] == RECIPE and index["columns"] == 3
    assert index["width"] == 48 and index["height"] == 32 and index["image"].startswith(recipe_hash(RECIPE))
    assert store.sprite(fp, layer, recipe_hash(RECIPE))[1] == index  # by hash too
    data, same = store.sprite_bytes(fp, layer, RECIPE)
    assert same == index and Image.open(io.BytesIO(data)).size == (48, 32)
    assert [s["layer"] for s in store.sprites()] == [layer] and store.sprites(fingerprint="other") == []
    assert store.info()["sprites"][0]["layer"] == layer

    store.put_sprite(fp, layer, RECIPE, _img(6, (16, 16, 3)), {"units": []})  # rewrite: the old sheet goes
    img2, index2 = store.sprite(fp, layer, RECIPE)
    assert img2.size == (16, 16) and index2["image"] != index["image"]
    names = [rel.rsplit("/", 1)[1] for rel, _, _ in store.files.walk("sprites")]
    assert sorted(names) == sorted([index2["image"], f"{recipe_hash(RECIPE)}.json"])
    store.files.write(f"sprites/{fp}/blocks.3/{index['image']}", data)  # an orphan (two writers raced)
    assert store.clean_temp(max_age_s=0) == 1 and store.sprite(fp, layer, RECIPE) is not None

    store.files.write(f"sprites/{fp}/blocks.3/{index2['image']}", b"\x89PNG damaged")
    with pytest.warns(CorruptIconWarning, match="sha256"):
        assert store.sprite(fp, layer, RECIPE) is None


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_sprite_names_are_safe(kind, tmp_path, mem):
    store = IconStore(tmp_path / "sp") if kind == "local" else mem
    assert layer_slug("blocks.3") == "blocks.3" and layer_slug("<output>") == "_output_"
    assert layer_slug("..") == "_.." and "/" not in layer_slug("a/../../b")
    for bad in ["", "..", "a/b"]:
        with pytest.raises(InvalidIconError):
            store.put_sprite(bad, "blocks.3", RECIPE, _img(), {})
        with pytest.raises(InvalidIconError, match="model fingerprint"):
            store.sprite_url(bad, "blocks.3", RECIPE)
    with pytest.raises(InvalidIconError, match="recipe hash"):
        store.sprite("fp", "blocks.3", "not-a-hash")
    assert store.sprites() == [] and list(store.files.walk("")) == []  # nothing written


# ------------------------------------------------------------------------------- kill -9 mid-write

_WRITER = r"""
import sys, types
src, root = sys.argv[1:]
pkg = types.ModuleType("blocklens"); pkg.__path__ = [src]; sys.modules["blocklens"] = pkg
import numpy as np
from blocklens.store import IconStore, icon_key
store = IconStore(root)
rng = np.random.default_rng(0)
img = rng.integers(0, 256, size=(384, 384, 3), dtype=np.uint8)   # ~440 kB of incompressible PNG per entry
i = 0
while True:
    store.put(icon_key("fp0123456789abcd", "blocks.3", f"channel:{i % 50}", {"size": 384}), img, {"i": i})
    if i == 3:
        print("writing", flush=True)
    i += 1
"""


def test_sigkill_during_writes_leaves_only_valid_entries(tmp_path):
    import blocklens

    root = tmp_path / "killed"
    src = str(Path(blocklens.__file__).parent)
    for attempt in range(3):  # a kill that happens to land between writes proves less: kill at several moments
        p = subprocess.Popen([sys.executable, "-c", _WRITER, src, str(root)], stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "writing"
            time.sleep(0.05 + 0.07 * attempt)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
    store = IconStore(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing corrupt, so no warning
        report = store.verify(quarantine=False)
    assert report["corrupt"] == [] and report["ok"] == len(store) >= 4
    left = [p for p in (root / "icons").rglob(".tmp-*")]  # writes cut short, if a kill landed mid-write
    assert store.clean_temp(max_age_s=0) == len(left)
    assert not [p for p in (root / "icons").rglob(".tmp-*")]
    assert store.verify() == report
