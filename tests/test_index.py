"""The activation index: exact top-k against a direct computation, kill -9 and resume, unreadable files."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import blocklens as bl
from conftest import kill_9_after
from blocklens.errors import BlocklensError
from blocklens.images import bundled_images
from blocklens.dataset.index import build_index, folder_key, list_indexes, load_index

REPO = Path(__file__).resolve().parents[1]


def make_folder(root: Path, copies: int = 2) -> Path:
    """The 6 bundled photos, mirrored and cropped copies (in a subfolder), one broken file and one text file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "aug").mkdir(exist_ok=True)
    for stem, path in bundled_images().items():
        img = Image.open(path).convert("RGB")
        img.save(root / f"{stem}.png")
        if copies >= 1:
            ImageOps.mirror(img).save(root / "aug" / f"{stem}_flip.png")
        if copies >= 2:
            w, h = img.size
            img.crop((w // 8, h // 8, w - w // 8, h - h // 8)).save(root / "aug" / f"{stem}_crop.jpg")
        if copies >= 3:
            ImageOps.mirror(img.crop((0, 0, w * 3 // 4, h))).save(root / "aug" / f"{stem}_left.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("photos"))


LAYERS = ["blocks.7", "blocks.11"]


@pytest.fixture(scope="module")
def index(folder, lite0, tmp_path_factory):
    return build_index(folder, lite0, LAYERS, store=tmp_path_factory.mktemp("store"), k=5, chunk=4, classes=2,
                       progress=False)


def test_top_examples_are_the_direct_maxima_over_the_folder(index, folder, lite0):
    """Per unit, the index's top image and position is where a direct computation over every image (one at a
    time) finds the unit's maximum; the top-k values are the k largest per-image maxima, in order."""
    assert index.count == 18 and len(index.images) == 19
    per_image = {name: [] for name in LAYERS}
    ids = []
    for i, rel in enumerate(index.images):
        if rel in index.skipped:
            continue
        x, _ = lite0.prepare(folder / rel)
        acts = lite0.activations(x, LAYERS)
        for name in LAYERS:
            per_image[name].append(acts[name][0])
        ids.append(i)
    ids = np.array(ids)
    for name in LAYERS:
        a = torch.stack(per_image[name])  # (N, C, H, W)
        N, C, H, W = a.shape
        L = index.layer(name)
        flat = a.reshape(N, C, -1)
        mx, arg = flat.max(2)  # (N, C)
        best = mx.argmax(0)  # (C,)
        cols = torch.arange(C)
        np.testing.assert_array_equal(L.top_img[:, 0], ids[best.numpy()])
        pos = arg[best, cols].numpy()
        np.testing.assert_array_equal(L.top_y[:, 0], pos // W)
        np.testing.assert_array_equal(L.top_x[:, 0], pos % W)
        np.testing.assert_allclose(L.top_val[:, 0], a.amax((0, 2, 3)).numpy(), rtol=1e-4, atol=1e-4)
        expect = -np.sort(-mx.numpy(), axis=0)[:5].T  # (C, 5) the five largest per-image maxima
        np.testing.assert_allclose(L.top_val, expect, rtol=1e-4, atol=1e-4)
        # bottom examples: the lowest minima
        mn = flat.min(2).values.numpy()
        np.testing.assert_allclose(L.bot_val, np.sort(mn, axis=0)[:5].T, rtol=1e-4, atol=1e-4)
        assert L.signed == bool(mn.min() < 0)
        # one sample per readable image, non-edge positions, the vector is the activation there
        assert L.samples.shape == (N, C)
        for s in range(0, N, 5):
            j = int(np.where(ids == L.sample_images[s])[0][0])
            y, x = L.sample_positions[s]
            assert 1 <= y < H - 1 and 1 <= x < W - 1
            np.testing.assert_allclose(L.samples[s], a[j, :, y, x].numpy(), rtol=1e-4, atol=1e-4)


def test_sample_attribution_is_gradient_times_activation(index, folder, lite0):
    """A sample's attribution to its image's top class is sum_c A * d logprob / dA at that position."""
    L = index.layer("blocks.11")
    s = 3
    img = int(L.sample_images[s])
    y, x = L.sample_positions[s]
    xin, _ = lite0.prepare(index.path(img))
    with lite0.probe(["blocks.11"], grad=True) as p:
        out = p.run(xin.requires_grad_(True), stop=False)
        a = p.activations["blocks.11"]
        c = int(out.argmax())
        (g,) = torch.autograd.grad(out.log_softmax(-1)[0, c], a)
    assert int(L.sample_classes[s, 0]) == c
    expect = float((a.detach() * g)[0, :, y, x].sum())
    assert abs(float(L.sample_attribution[s, 0]) - expect) < 1e-4 * max(1.0, abs(expect))
    classes, probs = index.predictions()
    assert classes[img, 0] == c and probs[img, 0] > probs[img, 1] > 0


def test_unreadable_files_are_skipped_with_a_reason(index):
    assert set(index.skipped) == {"broken.jpg"}
    assert "broken.jpg" in index.skipped["broken.jpg"] and index.skipped["broken.jpg"]
    assert index.manifest["ignored"] == 1  # notes.txt
    broken = index.images.index("broken.jpg")
    for name in LAYERS:
        L = index.layer(name)
        assert broken not in L.top_img and broken not in L.sample_images
    classes, _ = index.predictions()
    assert (classes[broken] == -1).all()


def test_index_is_found_again_and_keyed_by_content(index, folder, lite0, tmp_path):
    again = build_index(folder, lite0, LAYERS, store=index.store, k=5, chunk=4, classes=2, progress=False)
    assert again.key == index.key
    assert load_index(index.key, store=index.store).key == index.key
    assert load_index(folder, lite0, LAYERS, store=index.store, k=5, chunk=4, classes=2).key == index.key
    # one of its layers: the index that holds it is used, nothing is indexed again
    from blocklens.dataset.index import index_for

    assert index_for(folder, lite0, ["blocks.11"], store=index.store,
                     log=lambda m: pytest.fail(f"indexed again: {m}")).key == index.key
    # a changed file changes the folder key, so the old index is not served
    other = make_folder(tmp_path / "other", copies=0)
    k1 = folder_key(other)
    Image.new("RGB", (64, 64), (10, 200, 30)).save(other / "chelsea.png")
    assert folder_key(other) != k1
    with pytest.raises(BlocklensError, match="blocklens index"):
        load_index(other, lite0, store=index.store)


def test_receptive_field_is_recorded_per_layer(index):
    rf7 = index.manifest["layer_info"]["blocks.7"]["receptive_field"]
    rf11 = index.manifest["layer_info"]["blocks.11"]["receptive_field"]
    assert rf7["stride"] == [16.0, 16.0] and rf11["stride"] == [32.0, 32.0]  # 14x14 and 7x7 grids at 224 px
    assert 16 <= rf7["size"] <= rf11["size"] <= 224
    assert rf7["size"] <= rf7["extent"]


def test_bad_input_names_the_problem(tmp_path, lite0):
    with pytest.raises(BlocklensError, match="does not exist"):
        build_index(tmp_path / "nope", lite0, ["blocks.7"], store=tmp_path / "s")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlocklensError, match="no image files"):
        build_index(tmp_path / "empty", lite0, ["blocks.7"], store=tmp_path / "s")
    with pytest.raises(BlocklensError, match="blocks.77"):
        build_index(make_folder(tmp_path / "f", 0), lite0, ["blocks.77"], store=tmp_path / "s")


def _arrays(idx):
    out = {}
    for name in idx.layers:
        for k, v in idx.layer(name).arrays.items():
            out[f"{name}/{k}"] = v
    out["pred"] = idx.predictions()[0]
    return out


def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_index(tmp_path, lite0):
    folder = make_folder(tmp_path / "photos", copies=3)
    store = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "blocklens", "index", str(folder), "--layers", "blocks.7", "--store", str(store),
           "--chunk", "1", "--k", "3", "--classes", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_9_after(proc, lambda: len(list(store.glob("index/*/shards/[0-9]*.npz"))), 4)
    n_shards = len(list(store.glob("index/*/shards/[0-9]*.npz")))  # finished shards, not a .tmp- write in flight
    assert 4 <= n_shards < 25
    assert not list(store.glob("index/*/manifest.json"))
    logs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed run: the same kernels, so the same bits
    try:
        resumed = build_index(folder, lite0, ["blocks.7"], store=store, chunk=1, k=3, classes=2, progress=False,
                              log=logs.append)
        whole = build_index(folder, lite0, ["blocks.7"], store=tmp_path / "store2", chunk=1, k=3, classes=2,
                            progress=False)
    finally:
        torch.set_num_threads(threads)
    assert f"{n_shards} of 25 chunks already" in logs[0]
    assert resumed.key == whole.key
    a, b = _arrays(resumed), _arrays(whole)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed.manifest["skipped"] == whole.manifest["skipped"]


def test_two_workers_give_the_same_index_as_one_process(folder, index, tmp_path):
    """Local worker processes (each rebuilding the model from its spec) make the same index."""
    spawned = build_index(folder, "efficientnet_lite0", LAYERS, store=tmp_path / "s", k=5, chunk=4, classes=2,
                          workers=2, threads=1, progress=False)
    assert spawned.key == index.key
    a, b = _arrays(spawned), _arrays(index)
    for k in a:
        if a[k].dtype.kind == "f":  # other thread counts sum in another order: equal to float rounding
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-3 * float(np.abs(b[k]).max()), err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_cli_index_json(folder, index, capsys):
    from blocklens.cli import main

    assert main(["index", str(folder), "--layers", *LAYERS, "--store", str(index.store.url), "--k", "5",
                 "--chunk", "4", "--classes", "2", "--json", "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["key"] == index.key and got["skipped"] == 1 and "broken.jpg" in got["skipped_files"]
    assert main(["index", "--no-progress"]) == 2
    assert "FOLDER, or --bundled" in capsys.readouterr().err


@pytest.mark.slow  # ~16 s; the Ray runner itself is covered by test_precompute's Ray test
def test_ray_tasks_give_the_same_index(folder, index, tmp_path):
    """Chunks as Ray tasks (a local cluster of 2 CPUs): the workers write their shards to the store."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        on_ray = build_index(folder, "efficientnet_lite0", LAYERS, store=tmp_path / "ray", k=5, chunk=4, classes=2,
                             ray="auto", threads=1, progress=False)
    finally:
        ray.shutdown()
    assert on_ray.key == index.key
    a, b = _arrays(on_ray), _arrays(index)
    for k in a:
        if a[k].dtype.kind == "f":  # other thread counts sum in another order: equal to float rounding
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-3 * float(np.abs(b[k]).max()), err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_chunks_do_not_keep_their_autograd_graphs(lite0, folder):
    """Each chunk's graph (for the attributions) is freed: the live tensors do not grow chunk after chunk."""
    import gc
    import warnings

    from blocklens.dataset.index import compute_chunk

    names = ["chelsea.png", "coffee.png", "dog.png", "giraffe.png"]

    def live():
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    compute_chunk(lite0, folder, names, [0, 1, 2, 3], LAYERS, 3, 1, 0, 2)
    before = live()
    for _ in range(2):
        compute_chunk(lite0, folder, names, [0, 1, 2, 3], LAYERS, 3, 1, 0, 2)
    assert live() <= before



def test_an_fsspec_store_holds_the_same_index(folder, index):
    store = bl.IconStore("memory://blocklens-index-test")
    mem = build_index(folder, "efficientnet_lite0", LAYERS, store=store, k=5, chunk=4, classes=2, progress=False)
    assert mem.key == index.key and mem.store.url.startswith("memory://")
    again = load_index(mem.key, store=store)
    a, b = _arrays(again), _arrays(index)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert [i.key for i in list_indexes(store)] == [mem.key]
