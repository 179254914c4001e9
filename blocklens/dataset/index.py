"""The activation index: what every unit of some layers does over a folder of images, computed once, kept in the store.

    index = build_index("photos/", "efficientnet_lite0", ["blocks.7", "blocks.11"], store="s3://bucket/blocklens")
    index.layer("blocks.11").top_images[5]      # the images where channel 5 peaks highest, best first

For every image of the folder (sorted relative paths, subfolders included) and every unit (channel) of each
layer, the statistic is the unit's spatial maximum over the image's positions, with its position (the first
one in row-major order on ties), and its minimum likewise. The index keeps, per unit, the ``k`` images with
the highest maxima (and the ``k`` with the lowest minima, for signed layers), ties broken by image order; since
each chunk of images keeps its own top ``k`` and the merge is a total order, the result is exact, the same as a
sort over every image. It also keeps a random sample of positions' activation vectors (``samples`` non-edge
positions per image, drawn from a generator seeded by ``(seed, image, layer)``, so independent of chunking and
workers) for the activation atlas, and for each sample its linear attribution to each of the image's top
``classes`` predicted classes: ``sum_c A[c, y, x] * d logprob / dA[c, y, x]`` at that position (gradient x
activation, the log-probability of the class as the score).

Work is split in chunks of ``chunk`` images (fixed, ordered). Each finished chunk is one ``.npz`` shard written
atomically to the store (``store.files.write``): ``<store>/index/<key>/shards/<chunk>.npz``. A run that
is killed (``kill -9`` included) leaves complete shards only; running it again skips them. When every chunk
has a shard, the shards are merged into one ``<layer>.npz`` per layer and ``manifest.json`` is written last
(the commit point). The key is a hash of the model's weight fingerprint, the layers, the folder's content key
(sha256 over every file's relative path and sha256), the preprocessing and the options; so a changed file,
model or option makes a new index and nothing stale is ever read.

Unreadable files (not an image, truncated, too large) are skipped: counted, each with its reason in the
manifest. Files without an image extension are ignored (counted as ``ignored``).

Each layer's receptive field is measured once (the gradient footprint on the input of the layer's centre
position, see :func:`receptive_field`) and kept in the manifest, so dataset examples can be cropped at it.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import BlocklensError, ImageError
from ..jobs import default_threads, describe_error, driver_model, parent_alive, run_jobs, use_threads, worker_model
from ..recipes import default_layers
from ..store import IconStore, layer_slug

__all__ = ["ActivationIndex", "LayerIndex", "build_index", "load_index", "index_for", "list_indexes", "index_key", "folder_key",
           "folder_images", "receptive_field", "IMAGE_EXTENSIONS", "INDEX_VERSION"]

#: Bumped whenever what a shard holds or how it is computed changes.
INDEX_VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
INDEX_DIR = "index"


# ---------------------------------------------------------------------------------------------- folder


def folder_images(folder: str | os.PathLike) -> tuple[list[str], int]:
    """Sorted relative paths (``/``-separated) of the files under ``folder`` with an image extension, and the
    number of other files (ignored). Hidden files and folders (``.name``) are left out."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise BlocklensError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise BlocklensError(f"{str(root)!r} is a file, not a folder of images")
    found, ignored = [], 0
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(rel)
            else:
                ignored += 1
    return sorted(found), ignored


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_digests(folder: str | os.PathLike, images: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """The folder's content key, sha256 (hex, 16 characters) over every image file's relative path and content
    sha256 in order, and those file digests."""
    root = Path(folder).expanduser()
    images = folder_images(root)[0] if images is None else images
    h = hashlib.sha256()
    digests = []
    for rel in images:
        try:
            digest = _file_sha(root / rel)
        except OSError as e:  # an unreadable file still keys the folder (its reason is recorded later)
            digest = f"unreadable:{type(e).__name__}"
        digests.append(digest)
        h.update(json.dumps([rel, digest]).encode())
    return h.hexdigest()[:16], digests


def folder_key(folder: str | os.PathLike, images: Sequence[str] | None = None) -> str:
    """sha256 (hex, 16 characters) over every image file's relative path and content sha256, in order."""
    return folder_digests(folder, images)[0]


def _preprocessing(model) -> dict:
    if getattr(model, "_custom_preprocess", None) is not None:
        fn = model._custom_preprocess
        return {"kind": "custom", "fn": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
                "size": model.input_size}
    return {"kind": "resize_and_crop", "size": model.input_size, "resize": model.resize,
            "channels": model.input_channels}


def index_key(fingerprint: str, layers: Sequence[str], folder: str, preprocessing: dict, options: dict) -> str:
    """The index's key: sha256 (16 hex) of a canonical JSON of everything that determines its numbers."""
    text = json.dumps({"version": INDEX_VERSION, "fingerprint": fingerprint, "layers": list(layers),
                       "folder": folder, "preprocessing": preprocessing, "options": options},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- compute


def prepared(model, path: str | os.PathLike):
    """``(x, crop)``: the model input ``(1, C, S, S)`` and the RGB picture it shows (the resized centre crop),
    from one decode of the file; raises :class:`ImageError` for an unreadable file."""
    from ..images import load_image
    from ..models.base import resize_and_crop, to_tensor01

    img = load_image(path)
    crop = resize_and_crop(img, model.input_size, model.resize)
    if getattr(model, "_custom_preprocess", None) is not None:
        x = model.preprocess(img)
    else:
        x = model.normalize(to_tensor01(crop, model.input_channels))
    return x, crop


def _sample_positions(seed: int, image: int, layer: int, h: int, w: int, n: int) -> np.ndarray:
    """``n`` (y, x) positions, away from the edge where the grid allows, from a generator of its own."""
    rng = np.random.default_rng([int(seed), int(image), int(layer)])
    y0, y1 = (1, h - 1) if h >= 3 else (0, h)
    x0, x1 = (1, w - 1) if w >= 3 else (0, w)
    return np.stack([rng.integers(y0, y1, n), rng.integers(x0, x1, n)], axis=1)


def compute_chunk(model, root: Path, images: Sequence[str], ids: Sequence[int], layers: Sequence[str],
                  k: int, samples: int, seed: int, classes: int, batch: int = 16) -> dict[str, np.ndarray]:
    """The shard of one chunk (arrays, see :func:`_merge` for what they mean); ``ids`` are the images' indices."""
    import torch

    infos = [model.layer(n) for n in layers]
    ok_ids, xs, skipped = [], [], {}
    for rel, i in zip(images, ids):
        try:
            x, _ = prepared(model, root / rel)
        except (ImageError, OSError) as e:
            skipped[rel] = str(e).replace(str(root / rel), rel)
            continue
        ok_ids.append(int(i))
        xs.append(x)
    out: dict[str, np.ndarray] = {"ids": np.asarray(ok_ids, np.int64),
                                  "skipped": np.asarray(json.dumps(skipped, sort_keys=True))}
    stats: dict[int, dict[str, list]] = {li: {} for li in range(len(infos))}
    preds_idx, preds_prob = [], []
    for start in range(0, len(xs), batch):
        x = torch.cat(xs[start:start + batch]).to(model.device)
        bids = ok_ids[start:start + batch]
        with model.probe([i.name for i in infos], grad=classes > 0) as probe:
            if classes > 0:  # the input requires grad so the graph exists even for frozen weights
                logits = probe.run(x.requires_grad_(True), stop=False)
            else:
                with torch.no_grad():
                    logits = probe.run(x, stop=False)
            acts = [probe.activations[i.name] for i in infos]
            topc = min(classes, logits.shape[-1]) if classes > 0 else 0
            if topc:
                logp = logits.log_softmax(-1)
                probs, cls = logp.detach().exp().topk(topc, dim=-1)
                attrs = [[] for _ in infos]
                for j in range(topc):
                    score = logp.gather(1, cls[:, j:j + 1]).sum()
                    grads = torch.autograd.grad(score, acts, retain_graph=j < topc - 1)
                    for li, (a, g) in enumerate(zip(acts, grads)):
                        attrs[li].append((a.detach() * g).sum(1))  # (B, H, W)
                preds_idx.append(cls.cpu().numpy())
                preds_prob.append(probs.cpu().numpy())
            acts = [a.detach() for a in acts]
            # the probe's gradient hooks live in the autograd graph and refer back to the probe, which holds the
            # graph's tensors: a cycle through C++ that Python's gc cannot see. Break it, or every batch's
            # graph stays in memory (about 1 GB per 16 images at 224 px)
            probe.activations.clear()
            probe.gradients.clear()
            logits = logp = None
        for li, (info, a) in enumerate(zip(infos, acts)):
            B, C = a.shape[:2]
            flat = a.reshape(B, C, -1).float()
            W = a.shape[3] if a.dim() == 4 else 1
            mx, amx = flat.max(dim=2)
            mn, amn = flat.min(dim=2)
            st = stats[li]
            st.setdefault("max", []).append(mx.cpu().numpy())
            st.setdefault("argmax", []).append(amx.cpu().numpy())
            st.setdefault("min", []).append(mn.cpu().numpy())
            st.setdefault("argmin", []).append(amn.cpu().numpy())
            if samples > 0 and a.dim() == 4:
                H = a.shape[2]
                for b, img in enumerate(bids):
                    pos = _sample_positions(seed, img, li, H, W, samples)
                    vec = a[b, :, pos[:, 0], pos[:, 1]].T.float().cpu().numpy()  # (samples, C)
                    st.setdefault("s_vec", []).append(vec)
                    st.setdefault("s_img", []).append(np.full(samples, img, np.int64))
                    st.setdefault("s_pos", []).append(pos.astype(np.int32))
                    if topc:
                        at = torch.stack([attrs[li][j][b, pos[:, 0], pos[:, 1]] for j in range(topc)], 1)
                        st.setdefault("s_attr", []).append(at.float().cpu().numpy())
                        st.setdefault("s_cls", []).append(np.repeat(cls[b:b + 1].cpu().numpy(), samples, 0))
    n = len(ok_ids)
    if classes > 0:
        out["pred_idx"] = np.concatenate(preds_idx) if preds_idx else np.zeros((0, classes), np.int64)
        out["pred_prob"] = np.concatenate(preds_prob) if preds_prob else np.zeros((0, classes), np.float32)
    for li, info in enumerate(infos):
        st, C = stats[li], info.channels
        W = info.width if info.spatial else 1
        p = f"L{li}_"
        if n == 0:
            out[p + "val"] = np.zeros((0, C), np.float32)
            continue
        mx, amx = np.concatenate(st["max"]), np.concatenate(st["argmax"])
        mn, amn = np.concatenate(st["min"]), np.concatenate(st["argmin"])
        ids_arr = np.asarray(ok_ids, np.int64)
        for tag, val, arg, sign in (("top", mx, amx, 1.0), ("bot", mn, amn, -1.0)):
            order = _order(sign * val, ids_arr, k)  # (k', C) rows into this chunk's images
            cols = np.arange(C)[None, :]
            out[p + tag + "_val"] = val[order, cols].T.astype(np.float32)
            out[p + tag + "_img"] = ids_arr[order].T
            out[p + tag + "_y"] = (arg[order, cols] // W).T.astype(np.int32)
            out[p + tag + "_x"] = (arg[order, cols] % W).T.astype(np.int32)
        out[p + "absmax"] = np.abs(np.stack([mx, mn])).max(0).max(0).astype(np.float32)
        out[p + "min"] = mn.min(0).astype(np.float32)
        out[p + "mean_max"] = mx.sum(0).astype(np.float64)  # summed; divided by the count at the merge
        if samples > 0 and "s_vec" in st:
            out[p + "s_vec"] = np.concatenate(st["s_vec"]).astype(np.float32)
            out[p + "s_img"] = np.concatenate(st["s_img"])
            out[p + "s_pos"] = np.concatenate(st["s_pos"])
            if "s_attr" in st:
                out[p + "s_attr"] = np.concatenate(st["s_attr"]).astype(np.float32)
                out[p + "s_cls"] = np.concatenate(st["s_cls"]).astype(np.int64)
    return out


def _order(score: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``score`` (N, C) of the ``k`` highest per column, highest first, ties by the lower image id."""
    n = score.shape[0]
    kk = min(k, n)
    # lexsort per column: primary -score, secondary id
    keys = np.argsort(ids, kind="stable")
    s = score[keys]  # rows ordered by id
    order = np.argsort(-s, axis=0, kind="stable")[:kk]  # stable: equal scores keep id order
    return keys[order]


# ---------------------------------------------------------------------------------------------- shards


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as the bytes of one ``.npz`` file (a shard)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_load(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a shard's bytes (no pickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@dataclass
class IndexJob:
    """One chunk of images, as a worker gets it (picklable; the model is rebuilt from its spec)."""

    index: int
    images: list[str]
    ids: list[int]
    folder: str
    layers: list[str]
    key: str
    k: int
    samples: int
    seed: int
    classes: int
    model: str
    fingerprint: str
    store: str
    storage_options: dict = field(default_factory=dict)
    write: bool = True
    device: str | None = None
    threads: int | None = None
    loader: Callable[[], Any] | None = None
    weights: str | None = None


def _shard_rel(key: str, chunk: int) -> str:
    return f"{INDEX_DIR}/{key}/shards/{chunk:06d}.npz"


def _execute_chunk(job: IndexJob, model, store: IconStore | None) -> dict:
    t0 = time.perf_counter()
    arrays = compute_chunk(model, Path(job.folder), job.images, job.ids, job.layers, job.k, job.samples, job.seed,
                           job.classes)
    data = npz_bytes(arrays)
    if not parent_alive():  # the run was killed: write nothing behind its back
        os._exit(1)
    if job.write:
        store.files.write(_shard_rel(job.key, job.index), data)
        data = None
    return {"chunk": job.index, "images": len(job.images), "data": data, "seconds": time.perf_counter() - t0,
            "pid": os.getpid()}


def run_chunk(job: IndexJob) -> dict:
    """Worker entry point (local process or Ray task): compute one chunk and put its shard into the store."""
    use_threads(job.threads)
    model = worker_model(job)
    store = IconStore(job.store, storage_options=job.storage_options) if job.write else None
    return _execute_chunk(job, model, store)


# ---------------------------------------------------------------------------------------------- receptive field


def receptive_field(model, layer: str, trials: int = 2, mass: float = 0.8) -> dict:
    """The input footprint of one position of ``layer``: the gradient of its centre position's summed
    activation on random inputs. Returns ``size`` (the side in input pixels of the smallest square around the
    position's centre that holds ``mass`` of the gradient's absolute mass: the effective receptive field),
    ``extent`` (the side of the square holding every nonzero gradient: the theoretical one, clipped to the
    input) and ``stride`` ``[sy, sx]`` (input pixels per grid step)."""
    import torch

    info = model.layer(layer)
    S = model.input_size
    if not info.spatial:
        return {"size": S, "extent": S, "stride": [S, S], "grid": [1, 1]}
    H, W = info.height, info.width
    cy, cx = H // 2, W // 2
    sy, sx = S / H, S / W
    total = torch.zeros(S, S)
    gen = torch.Generator().manual_seed(0)
    for _ in range(trials):
        x = (torch.randn(1, model.input_channels, S, S, generator=gen) * 0.5).to(model.device).requires_grad_(True)
        with model.probe([info.name], grad=True) as probe:
            probe.run(x, stop=True)
            a = probe.activations[info.name]
            (g,) = torch.autograd.grad(a[0, :, cy, cx].abs().sum(), x)
        total += g.detach().abs().sum(1)[0].cpu()
    ccy, ccx = (cy + 0.5) * sy, (cx + 0.5) * sx
    ys = torch.arange(S).float()[:, None] + 0.5
    xs = torch.arange(S).float()[None, :] + 0.5
    dist = torch.maximum((ys - ccy).abs(), (xs - ccx).abs())  # Chebyshev distance to the centre
    t = total.flatten()
    d = dist.flatten()
    if float(t.sum()) <= 0:
        return {"size": S, "extent": S, "stride": [sy, sx], "grid": [H, W]}
    order = torch.argsort(d)
    cum = torch.cumsum(t[order], 0) / t.sum()
    r = float(d[order][int(torch.searchsorted(cum, torch.tensor(mass)))])
    r_all = float(d[t > 0].max())
    size = int(min(S, max(2 * math.ceil(r), math.ceil(max(sy, sx)))))
    return {"size": size, "extent": int(min(S, 2 * math.ceil(r_all))), "stride": [sy, sx], "grid": [H, W],
            "mass": mass}


# ---------------------------------------------------------------------------------------------- merge


def _merge(shards: list[dict[str, np.ndarray]], layers: Sequence[str], infos, k: int) -> dict[str, dict]:
    """Shards (in chunk order) -> per layer: ``top_val`` (C, k) etc. (exact top-k over all images)."""
    out = {}
    for li, (name, info) in enumerate(zip(layers, infos)):
        p = f"L{li}_"
        res: dict[str, np.ndarray] = {}
        for tag, sign in (("top", 1.0), ("bot", -1.0)):
            parts = [s for s in shards if (p + tag + "_val") in s and s[p + tag + "_val"].size]
            if not parts:
                continue
            val = np.concatenate([s[p + tag + "_val"] for s in parts], axis=1)  # (C, sum k)
            img = np.concatenate([s[p + tag + "_img"] for s in parts], axis=1)
            ys = np.concatenate([s[p + tag + "_y"] for s in parts], axis=1)
            xs = np.concatenate([s[p + tag + "_x"] for s in parts], axis=1)
            kk = min(k, val.shape[1])
            # per unit: order by (-sign*val, image id)
            o = np.lexsort((img, -sign * val), axis=1)[:, :kk]
            rows = np.arange(val.shape[0])[:, None]
            res[tag + "_val"] = val[rows, o]
            res[tag + "_img"] = img[rows, o]
            res[tag + "_y"] = ys[rows, o]
            res[tag + "_x"] = xs[rows, o]
        with_vals = [s for s in shards if (p + "absmax") in s]
        if with_vals:
            res["min"] = np.min([s[p + "min"] for s in with_vals], axis=0)
            res["mean_max"] = (np.sum([s[p + "mean_max"] for s in with_vals], axis=0)
                               / max(1, sum(len(s["ids"]) for s in with_vals))).astype(np.float32)
        for key in ("s_vec", "s_img", "s_pos", "s_attr", "s_cls"):
            got = [s[p + key] for s in shards if (p + key) in s]
            if got:
                res[key] = np.concatenate(got)
        out[name] = res
    return out


# ---------------------------------------------------------------------------------------------- the index


@dataclass
class LayerIndex:
    """One layer of an index. ``top_*`` are ``(C, k)``: per unit the images with the highest spatial maxima,
    best first (``top_val`` the maximum, ``top_img`` the image id, ``top_y``/``top_x`` its position on the
    layer's grid); ``bot_*`` the same for the lowest minima. ``samples``: ``(N, C)`` activation vectors at
    ``sample_images`` / ``sample_positions`` ``(N, 2)`` (y, x); ``sample_classes`` / ``sample_attribution``
    ``(N, T)``: the image's top T classes and each one's linear attribution at that position."""

    name: str
    info: dict
    arrays: dict[str, np.ndarray]

    def __getattr__(self, item):
        arrays = self.__dict__.get("arrays", {})
        alias = {"samples": "s_vec", "sample_images": "s_img", "sample_positions": "s_pos",
                 "sample_attribution": "s_attr", "sample_classes": "s_cls"}.get(item, item)
        if alias in arrays:
            return arrays[alias]
        raise AttributeError(item)

    @property
    def signed(self) -> bool:
        """True when some unit went below zero on some image (its bottom examples mean something)."""
        return bool(self.info.get("signed"))

    @property
    def channels(self) -> int:
        return int(self.info["shape"][0])


class ActivationIndex:
    """A finished index, read from the store (see the module docstring). ``images``: relative paths (image id
    = position in this list); ``skipped``: ``{path: reason}``; ``layers``: names; ``manifest``: everything."""

    def __init__(self, store: IconStore, key: str, manifest: dict):
        self.store, self.key, self.manifest = store, key, manifest
        self._layers: dict[str, LayerIndex] = {}

    def __repr__(self) -> str:
        return (f"<ActivationIndex {self.key} of {self.manifest['model']} over {self.manifest['folder']} "
                f"({self.count} images, layers {', '.join(self.layers)})>")

    @property
    def folder(self) -> Path:
        return Path(self.manifest["folder"])

    @property
    def images(self) -> list[str]:
        return self.manifest["images"]

    @property
    def skipped(self) -> dict[str, str]:
        return self.manifest["skipped"]

    @property
    def count(self) -> int:
        return len(self.images) - len(self.skipped)

    @property
    def layers(self) -> list[str]:
        return list(self.manifest["layers"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def path(self, image: int) -> Path:
        return self.folder / self.images[int(image)]

    def predictions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(classes, probs)``, each ``(images, T)`` (rows of skipped images are -1 / 0), or None."""
        a = self._read("predictions.npz")
        return (a["pred_idx"], a["pred_prob"]) if a is not None and "pred_idx" in a else None

    def _read(self, name: str) -> dict | None:
        data = self.store.files.read(f"{INDEX_DIR}/{self.key}/{name}")
        return None if data is None else npz_load(data)

    def layer(self, name: str) -> LayerIndex:
        """The arrays of one indexed layer (names as given to :func:`build_index`, or a model's canonical one)."""
        if name not in self.manifest["layer_info"]:
            from ..errors import unknown

            raise unknown("indexed layer", name, self.layers, hint=f"index {self.key} has {', '.join(self.layers)}")
        if name not in self._layers:
            arrays = self._read(f"{layer_slug(name)}.npz")
            if arrays is None:
                raise BlocklensError(f"index {self.key} in {self.store.url} lists layer {name!r} but its file "
                                     f"{layer_slug(name)}.npz is missing: build the index again")
            self._layers[name] = LayerIndex(name, self.manifest["layer_info"][name], arrays)
        return self._layers[name]

    def check_model(self, model) -> None:
        if model.fingerprint != self.fingerprint:
            raise BlocklensError(f"index {self.key} was built with model weights {self.fingerprint} "
                                 f"({self.manifest['model']}), not {model.fingerprint} ({model.name})")

    def to_json(self) -> dict:
        m = self.manifest
        return {"key": self.key, "model": m["model"], "fingerprint": m["fingerprint"], "folder": m["folder"],
                "images": len(m["images"]), "indexed": self.count, "skipped": len(m["skipped"]),
                "layers": self.layers, "options": m["options"], "store": self.store.url}


def _open_store(store, storage_options=None) -> IconStore:
    return store if isinstance(store, IconStore) else IconStore(store, storage_options=storage_options)


def list_indexes(store: IconStore | str | None = None) -> list[ActivationIndex]:
    """Every finished index in a store (newest first)."""
    store = _open_store(store)
    found = []
    for rel, _, mtime in store.files.walk(INDEX_DIR):
        parts = rel.split("/")
        if len(parts) == 3 and parts[2] == "manifest.json":
            m = store.files.read_json(rel)
            if m and m.get("version") == INDEX_VERSION:
                found.append((mtime or 0, ActivationIndex(store, parts[1], m)))
    return [i for _, i in sorted(found, key=lambda t: -t[0])]


def load_index(source: str | os.PathLike | ActivationIndex, model=None, layers: Sequence[str] | None = None, *,
               store: IconStore | str | None = None, storage_options: dict | None = None, _need=None,
               **options) -> ActivationIndex:
    """An index from the store: by its key (16 hex), or for a folder (with the ``model`` and ``layers`` and
    options it was built with, as for :func:`build_index`; without ``layers``: the newest index of that model
    over that folder's current content). Raises :class:`BlocklensError` saying how to build it when absent."""
    if isinstance(source, ActivationIndex):
        return source
    st = _open_store(store, storage_options)
    text = str(source)
    if len(text) == 16 and all(c in "0123456789abcdef" for c in text) and not Path(text).exists():
        m = st.files.read_json(f"{INDEX_DIR}/{text}/manifest.json")
        if m is None:
            raise BlocklensError(f"no finished index {text} in {st.url} (blocklens index FOLDER builds one)")
        return ActivationIndex(st, text, m)
    folder = Path(text).expanduser().resolve()
    images, _ = folder_images(folder)
    fkey = folder_key(folder, images)
    fp = None
    if model is not None:
        from ..models import load_model

        model = load_model(model) if isinstance(model, str) else model
        fp = model.fingerprint
    if layers is not None and model is not None:
        key = index_key(fp, [model.layer(n).name for n in layers], fkey, _preprocessing(model), _options(**options))
        m = st.files.read_json(f"{INDEX_DIR}/{key}/manifest.json")
        if m is not None:
            return ActivationIndex(st, key, m)
    need = layers if layers is not None else _need
    for idx in list_indexes(st):
        if idx.manifest.get("folder_key") == fkey and (fp is None or idx.fingerprint == fp) and (
                need is None or all((model.layer(n).name if model else n) in idx.layers for n in need)):
            return idx
    raise BlocklensError(f"no finished index of {folder} (its current content) "
                         + (f"for model {model.name} " if model is not None else "")
                         + (f"with layers {', '.join(need)} " if need else "")
                         + f"in {st.url}: build it with blocklens index {folder}")


def index_for(folder: str | os.PathLike, model, layers: Sequence[str], *, store=None, **build) -> "ActivationIndex":
    """An index of ``folder``'s current content that holds ``layers`` (any options): the newest in the store,
    else one built now (:func:`build_index` with ``build``), so asking for one layer never re-indexes a folder
    that an index of several layers already covers."""
    try:
        return load_index(folder, model, None, store=store, _need=layers)
    except BlocklensError:
        return build_index(folder, model, layers, store=store, **build)


def _options(k: int = 16, samples: int = 1, seed: int = 0, classes: int = 5, chunk: int = 32) -> dict:
    return {"k": int(k), "samples": int(samples), "seed": int(seed), "classes": int(classes), "chunk": int(chunk)}


def build_index(folder: str | os.PathLike, model: Any = "efficientnet_lite0", layers: Sequence[str] | None = None,
                *, store: IconStore | str | os.PathLike | None = None, storage_options: dict | None = None,
                k: int = 16, samples: int = 1, seed: int = 0, classes: int = 5, chunk: int = 32,
                workers: int = 0, threads: int | None = None, device: str | None = None, ray: str | None = None,
                ray_init: dict | None = None, gpus_per_task: float = 0, progress: bool | None = None, loader: Callable[[], Any] | None = None,
                weights: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
                stop_after: int | None = None) -> ActivationIndex:
    """Index ``folder`` (see the module docstring) and return the finished :class:`ActivationIndex`.

    ``model``: a spec or a :class:`~blocklens.Model` (workers rebuild it from its spec, as for
    :func:`blocklens.precompute.precompute`). ``layers``: default the report's layers. ``k``: top (and bottom)
    images kept per unit; ``samples``: random positions per image kept for the atlas; ``seed``: their draw;
    ``classes``: top predicted classes whose attribution each sample records (0: none; each costs one
    backward pass); ``chunk``: images per shard. ``workers``: local processes (0: this process); ``ray``: as
    for precompute (``"auto"``, an address or ``"local"``; ``gpus_per_task`` GPUs reserved per chunk, 1 by default
    with ``device="cuda"``). ``stop_after``: stop after that many chunks
    (testing; returns None). A finished index is returned at once; a partial one resumes.
    """
    say = log or (lambda msg: None)
    for name, v, low in (("k", k, 1), ("samples", samples, 0), ("classes", classes, 0), ("chunk", chunk, 1),
                         ("workers", workers, 0)):
        if v < low:
            raise BlocklensError(f"{name} must be at least {low}, got {v}")
    root = Path(folder).expanduser().resolve()
    images, ignored = folder_images(root)
    if not images:
        raise BlocklensError(f"no image files in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, subfolders "
                             f"included; {ignored} other file(s) ignored)")
    remote = ray is not None or workers > 0
    if ray is not None and device == "cuda" and not gpus_per_task:
        gpus_per_task = 1  # Ray shows a task only the GPUs it reserved
    model, spec, weights = driver_model(model, loader=loader, weights=weights, device=device, remote=remote)
    layers = default_layers(model) if layers is None else list(layers)
    if not layers:
        raise BlocklensError("no layer to index")
    infos = [model.layer(n) for n in layers]
    names = [i.name for i in infos]
    store = _open_store(store, storage_options)
    fkey, digests = folder_digests(root, images)
    opts = _options(k, samples, seed, classes, chunk)
    key = index_key(model.fingerprint, names, fkey, _preprocessing(model), opts)
    manifest_rel = f"{INDEX_DIR}/{key}/manifest.json"
    done = store.files.read_json(manifest_rel)
    if done is not None:
        say(f"index {key} of {root} is complete in {store.url}")
        return ActivationIndex(store, key, done)

    chunks = [list(range(s, min(s + chunk, len(images)))) for s in range(0, len(images), chunk)]
    have = {rel.rsplit("/", 1)[1] for rel, _, _ in store.files.walk(f"{INDEX_DIR}/{key}/shards")}
    todo = [c for c in range(len(chunks)) if f"{c:06d}.npz" not in have]
    write_in_workers = store.shared or not remote
    threads = default_threads(threads, workers, ray)
    jobs = [IndexJob(c, [images[i] for i in chunks[c]], chunks[c], str(root), names, key, k, samples, seed, classes,
                     spec or model.name, model.fingerprint, store.url, dict(store.storage_options),
                     write=write_in_workers, device=None if device in (None, "auto") or ray is None else device,
                     threads=threads, loader=loader, weights=weights) for c in todo]
    if stop_after is not None:
        jobs = jobs[:stop_after]
    how = f"Ray tasks ({ray})" if ray is not None else (f"{workers} worker processes" if workers else "this process")
    say(f"index {key}: {len(images)} images in {root} ({ignored} other files ignored), layers {', '.join(names)} of "
        f"{model.name}; {len(chunks) - len(todo)} of {len(chunks)} chunks already in {store.url}; "
        f"{sum(len(j.images) for j in jobs)} images to do on {how}")
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(len(j.images) for j in jobs), desc=f"index {model.name}", unit="img",
               disable=not show or not jobs, smoothing=0.1, dynamic_ncols=True)
    errors: list[str] = []

    def on_result(job: IndexJob, res: dict) -> None:
        if res.get("data") is not None:
            store.files.write(_shard_rel(key, job.index), res["data"])
        bar.update(len(job.images))

    def on_error(job: IndexJob, e: BaseException) -> None:
        errors.append(f"chunk {job.index} ({job.images[0]}..): {describe_error(e)}")
        say(errors[-1])
        bar.update(len(job.images))

    try:
        run_jobs(jobs, ray=ray, workers=workers, threads=threads, device=device, gpus_per_task=gpus_per_task,
                 ray_init=ray_init, on_result=on_result, on_error=on_error, fn=run_chunk,
                 execute=lambda job: _execute_chunk(job, model, store))
    finally:
        bar.close()
    if errors:
        raise BlocklensError(f"{len(errors)} chunk(s) of the index failed (run again to retry them): " + "; ".join(errors))
    if stop_after is not None and len(todo) > stop_after:
        return None
    return _finish(store, key, model, root, images, digests, ignored, fkey, names, infos, opts, len(chunks), say)


def _finish(store, key, model, root, images, digests, ignored, fkey, names, infos, opts, n_chunks,
            say) -> ActivationIndex:
    shards = []
    for c in range(n_chunks):
        data = store.files.read(_shard_rel(key, c))
        if data is None:
            raise BlocklensError(f"index {key}: the shard of chunk {c} is not in {store.url} although its worker finished: "
                                 "with Ray on several machines the store must be one they all reach (an object store "
                                 "URL, or a network folder mounted at the same path); else run again")
        shards.append(npz_load(data))
    skipped: dict[str, str] = {}
    for s in shards:
        skipped.update(json.loads(str(s["skipped"])))
    merged = _merge(shards, names, infos, opts["k"])
    layer_info = {}
    for name, info in zip(names, infos):
        arrays = merged[name]
        rf = receptive_field(model, name)
        layer_info[name] = {"shape": list(info.shape), "layout": info.layout, "spatial": info.spatial,
                            "signed": bool("min" in arrays and float(arrays["min"].min()) < 0),
                            "receptive_field": rf, "samples": int(len(arrays.get("s_vec", ())))}
        store.files.write(f"{INDEX_DIR}/{key}/{layer_slug(name)}.npz", npz_bytes(arrays))
    if opts["classes"] > 0:
        n, t = len(images), opts["classes"]
        pidx = np.full((n, t), -1, np.int64)
        pprob = np.zeros((n, t), np.float32)
        for s in shards:
            if len(s["ids"]) and "pred_idx" in s:
                pidx[s["ids"], :s["pred_idx"].shape[1]] = s["pred_idx"]
                pprob[s["ids"], :s["pred_prob"].shape[1]] = s["pred_prob"]
        store.files.write(f"{INDEX_DIR}/{key}/predictions.npz", npz_bytes({"pred_idx": pidx, "pred_prob": pprob}))
    manifest = {"version": INDEX_VERSION, "key": key, "model": model.name, "fingerprint": model.fingerprint,
                "folder": str(root), "folder_key": fkey, "images": images, "sha256": digests, "skipped": skipped, "ignored": ignored,
                "layers": names, "layer_info": layer_info, "options": opts, "preprocessing": _preprocessing(model),
                "input_size": model.input_size,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store.files.write(f"{INDEX_DIR}/{key}/manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    say(f"index {key}: {len(images) - len(skipped)} images indexed, {len(skipped)} skipped"
        + "".join(f"\n  skipped {p}: {r}" for p, r in sorted(skipped.items())))
    return ActivationIndex(store, key, manifest)
