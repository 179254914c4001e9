"""How pictures are inlined in self-contained documents: the table behind ``blocklens.images.PICTURE_ENCODINGS``
and the sizes of the reports before and after.

1. Explains the bundled dog as ``blocklens explain dog`` does (the preset the device gets, the default store
   beneath which the reference pack is read) and writes its report twice: with the pictures as they were inlined
   before (``LEGACY``: icons PNG, activation grids JPEG quality 90 with 4:2:0 colour, photos JPEG quality 88)
   and as now (``picture_data_uri``). Prints both sizes.
2. For the report's own icons (channels from the reference pack: default preset; directions from the store or
   rendered now: quick preset on a CPU), each candidate encoding: mean bytes per icon, the dog report's size had
   every icon been inlined that way, and the difference from the exact picture at the size the page shows it:
   56 px (the classes and groups views; the dictionary shows 48, the spatial view 44, concept cards 64) and
   112 px (the same on a 2x screen). Both pictures are resized with Lanczos, as a browser's high-quality
   downscale roughly does; figures: PSNR (mean over icons, and the worst icon), the mean CIE76 colour
   difference (dE; about 2.3 is a just-noticeable difference) and the 99th percentile of dE.
3. The same for photographs: the six bundled photos' 224 px crops shown at 160 px (the summary's photo) and
   36 patches shown at 56 px (dataset examples).
4. Unless ``--no-concepts``: the concepts page of the malamute over the bundled photos (quick preset icons,
   in a temporary store), before and after. With ``--atlas``: an activation atlas (6x6, 80 px icons of 16
   steps) over the bundled photos and mirrored copies, before and after.

Run: python bench/bench_report_size.py [--no-concepts] [--atlas] [--max-icons N]
"""
import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import blocklens as bl  # noqa: E402
from blocklens import images  # noqa: E402

LIMIT = 4_000_000  # the dog report's budget in bytes
LEGACY = {"icon": ("PNG", {}), "grid": ("JPEG", {"quality": 90}), "photo": ("JPEG", {"quality": 88}),
          "exact": ("PNG", {})}
CANDIDATES = [
    ("PNG", "PNG", {}),
    ("WebP q75", "WEBP", {"quality": 75, "method": 6}),
    ("WebP q90", "WEBP", {"quality": 90, "method": 6}),
    ("WebP q100", "WEBP", {"quality": 100, "method": 6}),
    ("JPEG q90 4:2:0", "JPEG", {"quality": 90}),
    ("JPEG q70 4:4:4", "JPEG", {"quality": 70, "subsampling": 0}),
    ("JPEG q75 4:4:4", "JPEG", {"quality": 75, "subsampling": 0}),
    ("JPEG q80 4:4:4", "JPEG", {"quality": 80, "subsampling": 0}),
    ("JPEG q85 4:4:4", "JPEG", {"quality": 85, "subsampling": 0}),
    ("JPEG q90 4:4:4", "JPEG", {"quality": 90, "subsampling": 0}),
]
PHOTO_CANDIDATES = [
    ("JPEG q85", "JPEG", {"quality": 85}),
    ("JPEG q88", "JPEG", {"quality": 88}),
    ("JPEG q92", "JPEG", {"quality": 92}),
    ("JPEG q85 4:4:4", "JPEG", {"quality": 85, "subsampling": 0}),
    ("WebP q80", "WEBP", {"quality": 80, "method": 6}),
    ("WebP q85", "WEBP", {"quality": 85, "method": 6}),
    ("WebP q90", "WEBP", {"quality": 90, "method": 6}),
]


@contextlib.contextmanager
def encodings(table: dict):
    """Inline pictures with ``table`` instead of the chosen encodings (for the "before" sizes)."""
    saved = dict(images.PICTURE_ENCODINGS)
    images.PICTURE_ENCODINGS.update(table)
    try:
        yield
    finally:
        images.PICTURE_ENCODINGS.clear()
        images.PICTURE_ENCODINGS.update(saved)


def encoded(img: Image.Image, fmt: str, options: dict) -> bytes:
    return images._encode(img, fmt, options)


def uri_len(n: int, fmt: str) -> int:
    return len(f"data:image/{fmt.lower()};base64,") + 4 * ((n + 2) // 3)


def lab(a: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) -> CIELAB (D65)."""
    c = a.astype(np.float64) / 255
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def difference(a: Image.Image, b: Image.Image, size: int) -> tuple[float, float, float]:
    """(PSNR dB, mean dE, 99th percentile dE) of ``b`` against ``a``, both shown at ``size`` px."""
    ra = np.asarray(a.resize((size, size), Image.LANCZOS))
    rb = np.asarray(b.resize((size, size), Image.LANCZOS))
    mse = np.mean((ra.astype(np.float64) - rb) ** 2)
    de = np.sqrt(((lab(ra) - lab(rb)) ** 2).sum(-1))
    return (99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)), float(de.mean()), float(np.percentile(de, 99))


def table(title: str, pictures: list[Image.Image], candidates, sizes: list[int], extra=None) -> None:
    print(f"\n{title}")
    head = f"  {'encoding':16s} {'bytes':>8s}"
    if extra:
        head += f" {'report':>9s}"
    for s in sizes:
        head += f" | at {s} px: PSNR (worst)  dE   dE99"
    print(head)
    for name, fmt, opts in candidates:
        n, rows = [], {s: [] for s in sizes}
        for img in pictures:
            data = encoded(img, fmt, opts)
            n.append(len(data))
            back = Image.open(io.BytesIO(data)).convert("RGB")
            for s in sizes:
                rows[s].append(difference(img, back, s))
        line = f"  {name:16s} {np.mean(n) / 1024:6.1f} KB"
        if extra:
            line += f" {extra(fmt, opts) / 1e6:6.2f} MB"
        for s in sizes:
            x = np.array(rows[s])
            line += f" |      {x[:, 0].mean():5.1f} ({x[:, 0].min():5.1f}) {x[:, 1].mean():4.2f} {x[:, 2].mean():5.1f}"
        print(line, flush=True)


def photos() -> tuple[list[Image.Image], list[Image.Image]]:
    rng = np.random.default_rng(0)
    crops, patches = [], []
    for path in images.bundled_images().values():
        im = bl.load_image(path)
        w, h = im.size
        s = min(w, h)
        crop = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((224, 224), Image.BICUBIC)
        crops.append(crop)
        for _ in range(6):
            r = int(rng.integers(40, 110))
            x, y = int(rng.integers(0, 224 - r)), int(rng.integers(0, 224 - r))
            patches.append(crop.crop((x, y, x + r, y + r)).resize((56, 56), Image.BILINEAR))
    return crops, patches


def before_after(name: str, render) -> None:
    with encodings(LEGACY):
        before = len(render().encode())
    after = len(render().encode())
    print(f"{name}: before {before / 1e6:.2f} MB, after {after / 1e6:.2f} MB ({before / after:.1f}x smaller)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-concepts", action="store_true", help="skip the concepts page")
    ap.add_argument("--atlas", action="store_true", help="also an activation atlas page (renders 36 icons)")
    ap.add_argument("--max-icons", type=int, default=0, help="measure the table on this many icons only")
    args = ap.parse_args()

    from blocklens.dataset.examples import default_examples
    from blocklens.recipes import default_preset, recipe_preset
    from blocklens.web.report import report_html

    model = bl.load_model("efficientnet_lite0")
    preset = default_preset(model)
    t = time.perf_counter()
    expl = bl.explain(bl.bundled_image("dog"), model=model, preset=preset, progress=False)
    examples, note = default_examples(model, expl, None)
    print(f"explained dog ({preset} preset) in {time.perf_counter() - t:.0f} s: {len(expl.icons)} icons, "
          f"layers {', '.join(l.layer for l in expl.layers)}")

    def dog():
        return report_html(expl, examples=examples, examples_note=note)

    with encodings(LEGACY):
        before = dog()
    after = dog()
    print(f"\nexplain dog report: before {len(before.encode()) / 1e6:.2f} MB (icons PNG), after "
          f"{len(after.encode()) / 1e6:.2f} MB ({len(before.encode()) / len(after.encode()):.1f}x smaller; the "
          f"budget is {LIMIT / 1e6:.0f} MB)")
    in_report = [k for k in dict.fromkeys(expl.icons) if expl.icons[k] is not None]
    by_source: dict[str, list[Image.Image]] = {}
    for k in in_report:
        ic = expl.icons[k]
        label = f"{ic.source} {recipe_preset(ic.meta.get('recipe'))}"
        by_source.setdefault(label, []).append(ic.to_pil().convert("RGB"))
    icons = [im for ims in by_source.values() for im in ims]
    print("icons in the report: " + ", ".join(f"{len(v)} {k} ({v[0].size[0]} px)" for k, v in by_source.items()))
    png_total = sum(uri_len(len(encoded(im, "PNG", {})), "PNG") for im in icons)
    rest = len(before.encode()) - png_total  # everything but the icons, as before (grids JPEG q90, photo JPEG)

    def report_with(fmt, opts):
        return rest + sum(uri_len(len(encoded(im, fmt, opts)), fmt) for im in icons)

    sample = icons[:: max(1, len(icons) // args.max_icons)] if args.max_icons else icons
    table(f"icons of the dog report ({len(sample)} of {len(icons)}); 'report': its size with every icon so "
          "(the rest as before)", sample, CANDIDATES, [56, 112], extra=report_with)
    for label, ims in by_source.items():
        if len(by_source) > 1:
            table(f"  only the {label} icons ({len(ims)})", ims, [c for c in CANDIDATES if c[0] in
                  ("PNG", "WebP q90", "JPEG q75 4:4:4", "JPEG q85 4:4:4")], [56, 112])
    grids = [l.grid.image() for l in expl.layers if l.grid is not None]
    if grids:
        g = grids[0]
        table(f"the activation grid of {expl.layers[0].layer} ({g.size[0]} px, shown at 300 px, zoom up to 4x)",
              [g.convert("RGB")], [c for c in CANDIDATES if c[0] in ("PNG", "WebP q90", "JPEG q90 4:2:0",
                                                                     "JPEG q75 4:4:4", "JPEG q85 4:4:4")],
              [300, g.size[0]])
    crops, patches = photos()
    table("photographs: six 224 px crops shown at 160 px (the summary's photo; concept crops: 168 px)", crops,
          PHOTO_CANDIDATES, [160])
    table("photographs: 36 patches of 56 px shown at 56 px (dataset examples; concept patches: 64 px at 48)",
          patches, PHOTO_CANDIDATES, [56])
    chosen = {k: f"{f} {o}" for k, (f, o) in images.PICTURE_ENCODINGS.items()}
    print(f"\nchosen (blocklens.images.PICTURE_ENCODINGS): {chosen}")

    if not args.no_concepts:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            from blocklens.recipes import PRESETS

            result = bl.class_concepts(model, images.BUNDLED_DIR, "malamute", "blocks.11", store=bl.IconStore(tmp),
                                       progress=False, **PRESETS[preset]["icons"])
            print(f"\nconcepts of malamute over the bundled photos in {time.perf_counter() - t:.0f} s")
            before_after("concepts page", result.to_html)
    if args.atlas:
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_index import make_images

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "photos"
            folder.mkdir()
            make_images(folder, 24)
            store = bl.IconStore(Path(tmp) / "store")
            idx = bl.build_index(folder, model, ["blocks.11"], store=store, samples=8, progress=False)
            t = time.perf_counter()
            atlas = bl.activation_atlas(model, "blocks.11", idx, grid=6, min_points=3, store=store, size=80,
                                        steps=16, progress=False)
            print(f"\natlas: {len(atlas.cells)} cells in {time.perf_counter() - t:.0f} s")
            before_after("atlas page", atlas.to_html)


if __name__ == "__main__":
    main()
