"""Make docs/icons_encoding.png: a dozen icons of the reference pack as the report used to inline them (PNG, exact)
and as it inlines them now (``blocklens.images.picture_data_uri(image, "icon")``), at the size the page shows
them (56 px: the classes and groups views; 112 px: the same on a 2x screen), and one icon enlarged 3x with the
difference amplified 4x. A third row, WebP at quality 90, shows the candidate that lost (bench/bench_report_size.py
has the numbers). Resizing uses Lanczos, as a browser's high-quality downscale roughly does.

Run: python docs/icons_encoding.py [--out docs/icons_encoding.png] [--icon-quality Q]
"""
import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from blocklens import images  # noqa: E402

PACK = HERE.parent / "blocklens" / "data" / "pack" / "icons"


def pack_icons(n: int = 12) -> list[Image.Image]:
    paths = sorted(PACK.rglob("*.png"))
    step = max(1, len(paths) // n)
    return [Image.open(p).convert("RGB") for p in paths[::step][:n]]


def decoded(img: Image.Image, kind: str | None = None, fmt: str | None = None, **save) -> tuple[Image.Image, int]:
    """The picture after encoding (with picture_bytes for ``kind``, or Pillow's ``fmt``) and decoding; its bytes."""
    if kind:
        _, data = images.picture_bytes(img, kind)
    else:
        buf = io.BytesIO()
        img.save(buf, fmt, **save)
        data = buf.getvalue()
    return Image.open(io.BytesIO(data)).convert("RGB"), len(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(HERE / "icons_encoding.png"))
    ap.add_argument("--icon-quality", type=int, default=None, help="preview another JPEG quality for icons")
    args = ap.parse_args()
    if args.icon_quality:
        images.PICTURE_ENCODINGS["icon"] = ("JPEG", {**images.PICTURE_ENCODINGS["icon"][1], "quality": args.icon_quality})
    fmt, opts = images.PICTURE_ENCODINGS["icon"]
    chosen = f"{fmt} q{opts.get('quality')}" + (" 4:4:4" if opts.get("subsampling") == 0 else "")
    icons = pack_icons()
    rows = [("PNG (before)", [(i, len(images.picture_bytes(i, "exact")[1])) for i in icons]),
            (f"{chosen} (now)", [decoded(i, "icon") for i in icons]),
            ("WebP q90 (not chosen)", [decoded(i, fmt="WEBP", quality=90, method=6) for i in icons])]
    font = ImageFont.load_default()
    label_w, pad = 150, 6
    width = label_w + len(icons) * (112 + pad) + pad
    sections = [56, 112]
    height = 30 + sum(len(rows) * (s + pad) + 24 for s in sections) + 3 * 128 + 60
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 8), f"Reference-pack icons (128 px) inlined as PNG and as {chosen}, at the size the report shows "
              "them; sizes are the mean bytes per icon", fill="black", font=font)
    y = 30
    for size in sections:
        draw.text((pad, y), f"at {size} px ({'the page at 1x' if size == 56 else 'the page on a 2x screen'})",
                  fill="#444", font=font)
        y += 18
        for label, pics in rows:
            mean = np.mean([b for _, b in pics]) / 1024
            draw.text((pad, y + size // 2 - 10), label, fill="black", font=font)
            draw.text((pad, y + size // 2 + 4), f"{mean:.1f} KB", fill="#666", font=font)
            for k, (im, _) in enumerate(pics):
                sheet.paste(im.resize((size, size), Image.LANCZOS), (label_w + k * (size + pad), y))
            y += size + pad
        y += 6
    # one icon enlarged 3x (nearest neighbour: every pixel as a 3x3 block), and the difference amplified 4x
    k = 3
    ref, now, webp = rows[0][1][k][0], rows[1][1][k][0], rows[2][1][k][0]
    diff = np.clip(np.abs(np.asarray(ref, int) - np.asarray(now, int)) * 4, 0, 255).astype(np.uint8)
    draw.text((pad, y), "one icon enlarged 3x: PNG | " + chosen + " | WebP q90 | |PNG - " + chosen + "| x 4",
              fill="#444", font=font)
    y += 18
    for j, im in enumerate([ref, now, webp, Image.fromarray(diff)]):
        sheet.paste(im.resize((3 * 128, 3 * 128), Image.NEAREST), (pad + j * (3 * 128 + pad), y))
    sheet = sheet.crop((0, 0, width, y + 3 * 128 + pad))
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.size[0]}x{sheet.size[1]})")


if __name__ == "__main__":
    main()
