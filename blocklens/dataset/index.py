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

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import BlocklensError
from ..jobs import Backend, Progress, Shard, driver_model, finished, npz_bytes, npz_load, read_shards, run_shards, shard_path
from ..models.receptive import receptive_field  # noqa: F401 (kept importable here)
from ..recipes import default_layers
from ..store import IconStore, layer_slug
from .pipeline import input_batches
from .folders import IMAGE_EXTENSIONS, folder_digests, folder_images, folder_key, is_key, json_key

__all__ = ["folder_source", "ActivationIndex", "LayerIndex", "build_index", "load_index", "index_for", "list_indexes", "index_key", "folder_key",
           "folder_images", "receptive_field", "IMAGE_EXTENSIONS", "INDEX_VERSION"]

#: Bumped whenever what a shard holds or how it is computed changes.
INDEX_VERSION = 1
INDEX_DIR = "index"


# ---------------------------------------------------------------------------------------------- key


def index_key(fingerprint: str, layers: Sequence[str], folder: str, preprocessing: dict, options: dict) -> str:
    """The index's key: sha256 (16 hex) of a canonical JSON of everything that determines its numbers."""
    return json_key({"version": INDEX_VERSION, "fingerprint": fingerprint, "layers": list(layers), "folder": folder,
                     "preprocessing": preprocessing, "options": options})


# ---------------------------------------------------------------------------------------------- compute


def _sample_positions(seed: int, image: int, layer: int, h: int, w: int, n: int) -> np.ndarray:
    """``n`` (y, x) positions, away from the edge where the grid allows, from a generator of its own."""
    rng = np.random.default_rng([int(seed), int(image), int(layer)])
    y0, y1 = (1, h - 1) if h >= 3 else (0, h)
    x0, x1 = (1, w - 1) if w >= 3 else (0, w)
    return np.stack([rng.integers(y0, y1, n), rng.integers(x0, x1, n)], axis=1)


@dataclass
class IndexChunk:
    """One chunk of images to index (a shard's payload; picklable): the folder, the images' relative paths and
    ids (positions in the folder's sorted list), the layers and the options that shape the numbers."""

    folder: str
    images: list[str]
    ids: list[int]
    layers: list[str]
    k: int
    samples: int
    seed: int
    classes: int
    loader_workers: int | None = None


def _forward(model, infos, x, classes: int):
    """One batch: the layers' activations (detached), and with ``classes`` the top classes' indices and
    probabilities and per layer and class the linear attribution maps ``(B, H, W)`` of each class's log-prob."""
    import torch

    with model.probe([i.name for i in infos], grad=classes > 0) as probe:
        if classes > 0:  # the input requires grad so the graph exists even for frozen weights
            logits = probe.run(x.requires_grad_(True), stop=False)
        else:
            with torch.no_grad():
                logits = probe.run(x, stop=False)
        acts = [probe.activations[i.name] for i in infos]
        topc = min(classes, logits.shape[-1]) if classes > 0 else 0
        cls = probs = None
        attrs: list[list] = [[] for _ in infos]
        if topc:
            logp = logits.log_softmax(-1)
            probs, cls = logp.detach().exp().topk(topc, dim=-1)
            for j in range(topc):
                score = logp.gather(1, cls[:, j:j + 1]).sum()
                grads = torch.autograd.grad(score, acts, retain_graph=j < topc - 1)
                for li, (a, g) in enumerate(zip(acts, grads)):
                    attrs[li].append((a.detach() * g).sum(1))  # (B, H, W)
        acts = [a.detach() for a in acts]
        # the probe's gradient hooks live in the autograd graph and refer back to the probe, which holds the
        # graph's tensors: a cycle through C++ that Python's gc cannot see. Break it, or every batch's graph
        # stays in memory (about 1 GB per 16 images at 224 px)
        probe.activations.clear()
        probe.gradients.clear()
    return acts, attrs, cls, probs, topc


def _collect(st: dict, a, attrs_l, cls, bids, li: int, samples: int, seed: int, topc: int) -> None:
    """Add one batch of one layer to its statistics: per image each unit's max and min with their positions, and
    the sampled positions' vectors (with their attributions to the top classes)."""
    import torch

    B, C = a.shape[:2]
    flat = a.reshape(B, C, -1).float()
    W = a.shape[3] if a.dim() == 4 else 1
    mx, amx = flat.max(dim=2)
    mn, amn = flat.min(dim=2)
    for name, v in (("max", mx), ("argmax", amx), ("min", mn), ("argmin", amn)):
        st.setdefault(name, []).append(v.cpu().numpy())
    if samples <= 0 or a.dim() != 4:
        return
    H = a.shape[2]
    for b, img in enumerate(bids):
        pos = _sample_positions(seed, img, li, H, W, samples)
        vec = a[b, :, pos[:, 0], pos[:, 1]].T.float().cpu().numpy()  # (samples, C)
        st.setdefault("s_vec", []).append(vec)
        st.setdefault("s_img", []).append(np.full(samples, img, np.int64))
        st.setdefault("s_pos", []).append(pos.astype(np.int32))
        if topc:
            at = torch.stack([attrs_l[j][b, pos[:, 0], pos[:, 1]] for j in range(topc)], 1)
            st.setdefault("s_attr", []).append(at.float().cpu().numpy())
            st.setdefault("s_cls", []).append(np.repeat(cls[b:b + 1].cpu().numpy(), samples, 0))


def _layer_arrays(out: dict, st: dict, p: str, C: int, W: int, ok_ids: list[int], k: int, samples: int) -> None:
    """One layer's arrays of a shard (prefix ``p``) from its statistics: top and bottom ``k`` per unit, extremes,
    the summed maxima and the samples."""
    if not ok_ids:
        out[p + "val"] = np.zeros((0, C), np.float32)
        return
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


def compute_chunk(model, root: Path, images: Sequence[str], ids: Sequence[int], layers: Sequence[str],
                  k: int, samples: int, seed: int, classes: int, batch: int = 16,
                  loader_workers: int | None = None) -> dict[str, np.ndarray]:
    """The shard of one chunk (arrays, see :func:`_merge` for what they mean); ``ids`` are the images' indices.
    The images are decoded ahead of the model on ``loader_workers`` threads (:func:`~.pipeline.input_batches`)."""
    infos = [model.layer(n) for n in layers]
    ok_ids, skipped = [], {}
    stats: list[dict[str, list]] = [{} for _ in infos]
    preds_idx, preds_prob = [], []
    for b in input_batches(model, root, images, ids, batch, loader_workers):
        skipped.update(b.skipped)
        if b.x is None:
            continue
        bids = b.ids
        ok_ids += bids
        acts, attrs, cls, probs, topc = _forward(model, infos, b.x, classes)
        if topc:
            preds_idx.append(cls.cpu().numpy())
            preds_prob.append(probs.cpu().numpy())
        for li, a in enumerate(acts):
            _collect(stats[li], a, attrs[li], cls, bids, li, samples, seed, topc)
    out: dict[str, np.ndarray] = {"ids": np.asarray(ok_ids, np.int64),
                                  "skipped": np.asarray(json.dumps(skipped, sort_keys=True))}
    if classes > 0:
        out["pred_idx"] = np.concatenate(preds_idx) if preds_idx else np.zeros((0, classes), np.int64)
        out["pred_prob"] = np.concatenate(preds_prob) if preds_prob else np.zeros((0, classes), np.float32)
    for li, info in enumerate(infos):
        _layer_arrays(out, stats[li], f"L{li}_", info.channels, info.width if info.spatial else 1, ok_ids, k, samples)
    return out


def index_chunk(model, chunk: IndexChunk, store=None) -> dict[str, np.ndarray]:
    """The index's task (see :func:`blocklens.jobs.run_shards`): one chunk's shard."""
    return compute_chunk(model, Path(chunk.folder), chunk.images, chunk.ids, chunk.layers, chunk.k, chunk.samples,
                         chunk.seed, chunk.classes, loader_workers=chunk.loader_workers)


def _order(score: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``score`` (N, C) of the ``k`` highest per column, highest first, ties by the lower image id."""
    n = score.shape[0]
    kk = min(k, n)
    # lexsort per column: primary -score, secondary id
    keys = np.argsort(ids, kind="stable")
    s = score[keys]  # rows ordered by id
    order = np.argsort(-s, axis=0, kind="stable")[:kk]  # stable: equal scores keep id order
    return keys[order]


def _shard_rel(key: str, chunk: int) -> str:
    return shard_path(f"{INDEX_DIR}/{key}/shards", chunk)


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
    if is_key(text):
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
        key = index_key(fp, [model.layer(n).name for n in layers], fkey, model.preprocessing, _options(**options))
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


@dataclass
class _Plan:
    """What an index run is over: the folder, its images and digests, the layers, the options and the key."""

    root: Path
    images: list[str]
    ignored: int
    fkey: str
    digests: list[str]
    names: list[str]
    infos: list
    opts: dict
    key: str

    def shards(self, loader_workers: int | None = None) -> list[Shard]:
        c = self.opts["chunk"]
        spans = [list(range(s, min(s + c, len(self.images)))) for s in range(0, len(self.images), c)]
        o = self.opts
        return [Shard(n, len(ids), IndexChunk(folder=str(self.root), images=[self.images[i] for i in ids], ids=ids,
                                              layers=self.names, k=o["k"], samples=o["samples"], seed=o["seed"],
                                              classes=o["classes"], loader_workers=loader_workers),
                      _shard_rel(self.key, n))
                for n, ids in enumerate(spans)]


def _plan(folder, model, layers, opts: dict) -> _Plan:
    for name, low in (("k", 1), ("samples", 0), ("classes", 0), ("chunk", 1)):
        if opts[name] < low:
            raise BlocklensError(f"{name} must be at least {low}, got {opts[name]}")
    root = Path(folder).expanduser().resolve()
    images, ignored = folder_images(root)
    if not images:
        raise BlocklensError(f"no image files in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, subfolders "
                             f"included; {ignored} other file(s) ignored)")
    layers = default_layers(model) if layers is None else list(layers)
    if not layers:
        raise BlocklensError("no layer to index")
    infos = [model.layer(n) for n in layers]
    names = [i.name for i in infos]
    fkey, digests = folder_digests(root, images)
    key = index_key(model.fingerprint, names, fkey, model.preprocessing, opts)
    return _Plan(root=root, images=images, ignored=ignored, fkey=fkey, digests=digests, names=names, infos=infos,
                 opts=opts, key=key)


def build_index(folder: str | os.PathLike, model: Any = "efficientnet_lite0", layers: Sequence[str] | None = None,
                *, store: IconStore | str | os.PathLike | None = None, storage_options: dict | None = None,
                k: int = 16, samples: int = 1, seed: int = 0, classes: int = 5, chunk: int = 32,
                workers: int = 0, threads: int | None = None, device: str | None = None, ray: str | None = None,
                ray_init: dict | None = None, gpus_per_task: float = 0, progress: bool | None = None,
                loader: Callable[[], Any] | None = None, weights: str | os.PathLike | None = None,
                log: Callable[[str], None] | None = None, stop_after: int | None = None,
                on_progress: Callable[[Progress], None] | None = None,
                loader_workers: int | None = None) -> ActivationIndex:
    """Index ``folder`` (see the module docstring) and return the finished :class:`ActivationIndex`.

    ``model``: a spec or a :class:`~blocklens.Model` (workers rebuild it from its spec, as for
    :func:`blocklens.precompute.precompute`). ``layers``: default the report's layers. ``k``: top (and bottom)
    images kept per unit; ``samples``: random positions per image kept for the atlas; ``seed``: their draw;
    ``classes``: top predicted classes whose attribution each sample records (0: none; each costs one
    backward pass); ``chunk``: images per shard. ``workers``: local processes (0: this process); ``ray``: as
    for precompute (``"auto"``, an address or ``"local"``; ``gpus_per_task`` GPUs reserved per chunk, 1 by default
    with ``device="cuda"``). ``loader_workers``: threads that decode images ahead of the model in each worker
    (default: one per core beyond the first, :func:`~.pipeline.default_loader_workers`; 0: none; the numbers do not
    depend on it). ``on_progress(Progress)``: images done of all, after each chunk (chunks already in
    the store counted first). ``stop_after``: stop after that many chunks (testing; returns None). A finished
    index is returned at once; a partial one resumes.
    """
    say = log or (lambda msg: None)
    backend = Backend(workers=workers, threads=threads, device=device, ray=ray, gpus_per_task=gpus_per_task,
                      ray_init=ray_init)
    model, spec, weights = driver_model(model, loader=loader, weights=weights, device=device, remote=backend.remote)
    plan = _plan(folder, model, layers, _options(k, samples, seed, classes, chunk))
    store = _open_store(store, storage_options)
    done = store.files.read_json(f"{INDEX_DIR}/{plan.key}/manifest.json")
    if done is not None:
        say(f"index {plan.key} of {plan.root} is complete in {store.url}")
        return ActivationIndex(store, plan.key, done)
    shards = plan.shards(loader_workers)
    present = finished(store, shards)
    todo = sum(s.size for s in shards if s.index not in present)
    say(f"index {plan.key}: {len(plan.images)} images in {plan.root} ({plan.ignored} other files ignored), layers "
        f"{', '.join(plan.names)} of {model.name}; {len(present)} of {len(shards)} chunks already in {store.url}; "
        f"{todo} images to do on {backend.describe()}")
    report = run_shards(shards, index_chunk, worker=backend.worker_ref(model, spec, weights, loader), backend=backend,
                        store=store, model=model, phase="index", desc=f"index {model.name}", unit="img",
                        progress=progress, on_progress=on_progress, log=say, stop_after=stop_after,
                        label=lambda s: f"chunk {s.index} ({s.payload.images[0]}..)", present=present)
    report.raise_if_failed("chunk")
    if report.present + report.done < len(shards):
        return None
    return _finish(store, model, plan, read_shards(store, shards, f"index {plan.key}: the shard of chunk"), say)


def _finish(store, model, plan: _Plan, shards: list[dict], say) -> ActivationIndex:
    """Merge the shards into one file per layer and the predictions, then write the manifest (the commit point)."""
    skipped: dict[str, str] = {}
    for s in shards:
        skipped.update(json.loads(str(s["skipped"])))
    merged = _merge(shards, plan.names, plan.infos, plan.opts["k"])
    layer_info = {}
    for name, info in zip(plan.names, plan.infos):
        arrays = merged[name]
        layer_info[name] = {"shape": list(info.shape), "layout": info.layout, "spatial": info.spatial,
                            "signed": bool("min" in arrays and float(arrays["min"].min()) < 0),
                            "receptive_field": model.receptive_field(name),
                            "samples": int(len(arrays.get("s_vec", ())))}
        store.files.write(f"{INDEX_DIR}/{plan.key}/{layer_slug(name)}.npz", npz_bytes(arrays))
    if plan.opts["classes"] > 0:
        store.files.write(f"{INDEX_DIR}/{plan.key}/predictions.npz", npz_bytes(_predictions(shards, plan)))
    manifest = {"version": INDEX_VERSION, "key": plan.key, "model": model.name, "fingerprint": model.fingerprint,
                "folder": str(plan.root), "folder_key": plan.fkey, "images": plan.images, "sha256": plan.digests,
                "skipped": skipped, "ignored": plan.ignored, "layers": plan.names, "layer_info": layer_info,
                "options": plan.opts, "preprocessing": model.preprocessing, "input_size": model.input_size,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store.files.write(f"{INDEX_DIR}/{plan.key}/manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    say(f"index {plan.key}: {len(plan.images) - len(skipped)} images indexed, {len(skipped)} skipped"
        + "".join(f"\n  skipped {p}: {r}" for p, r in sorted(skipped.items())))
    return ActivationIndex(store, plan.key, manifest)


def _predictions(shards: list[dict], plan: _Plan) -> dict[str, np.ndarray]:
    n, t = len(plan.images), plan.opts["classes"]
    pidx = np.full((n, t), -1, np.int64)
    pprob = np.zeros((n, t), np.float32)
    for s in shards:
        if len(s["ids"]) and "pred_idx" in s:
            pidx[s["ids"], :s["pred_idx"].shape[1]] = s["pred_idx"]
            pprob[s["ids"], :s["pred_prob"].shape[1]] = s["pred_prob"]
    return {"pred_idx": pidx, "pred_prob": pprob}


def folder_source(folder_or_index, store) -> tuple[Path, list[str], ActivationIndex | None]:
    """The folder, its images and the index (or None) of a folder path, an index key or an :class:`ActivationIndex`
    (what folder jobs such as class concepts and the concept dictionary take)."""
    if isinstance(folder_or_index, ActivationIndex):
        return folder_or_index.folder, list(folder_or_index.images), folder_or_index
    text = str(folder_or_index)
    if is_key(text):
        index = load_index(text, store=store)
        return index.folder, list(index.images), index
    root = Path(text).expanduser().resolve()
    if not root.is_dir():
        raise BlocklensError(f"{text!r} is neither a folder of images nor an index key (blocklens index FOLDER)")
    images, ignored = folder_images(root)
    if not images:
        raise BlocklensError(f"no image files in {root} (subfolders included; {ignored} other file(s) ignored)")
    return root, images, None
