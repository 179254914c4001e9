"""How self-contained documents inline pictures (``blocklens.images.picture_data_uri``): icons as JPEG with full
colour resolution, photographs as WebP, PNG where pixels must be exact; the encoder's size and error bounds on
the reference pack's icons, and which format each picture of a report gets (bench/bench_report_size.py has the
measurements behind the choice)."""
import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blocklens import images
from blocklens.images import PICTURE_ENCODINGS, picture_bytes, picture_data_uri, png_data_uri

PACK = Path(images.__file__).parent / "data" / "pack" / "icons"
SHOWN = 56  # px: the classes and groups views show icons at 56 px (the dictionary 48, the spatial view 44)


def decode(uri: str) -> tuple[str, Image.Image]:
    head, data = uri.split(",", 1)
    mime = re.fullmatch(r"data:(image/[a-z]+);base64", head)[1]
    return mime, Image.open(io.BytesIO(base64.b64decode(data)))


def psnr_shown(a: Image.Image, b: Image.Image, size: int = SHOWN) -> float:
    ra = np.asarray(a.convert("RGB").resize((size, size), Image.LANCZOS), np.float64)
    rb = np.asarray(b.convert("RGB").resize((size, size), Image.LANCZOS), np.float64)
    return float(10 * np.log10(255 ** 2 / np.mean((ra - rb) ** 2)))


@pytest.fixture(scope="module")
def pack_icons():
    paths = sorted(PACK.rglob("*.png"))
    return [Image.open(p).convert("RGB") for p in paths[::9]]  # 31 of the 272 reference icons (128 px)


def test_icons_are_a_fifth_of_png_and_look_the_same_at_the_size_shown(pack_icons):
    """On the reference pack's icons (what most of a report's bytes are): JPEG 4:4:4 at quality 75 is about
    5x smaller than PNG (measured: 8.9 KB against 43 KB) and, at the size the page shows them, within 36 dB PSNR
    of the exact picture for every icon (measured: worst 36.2, mean 38.1). 4:2:0 colour (WebP, default JPEG)
    measures 30-35 dB there: these bounds fail if the colour resolution is halved."""
    png = jpeg = 0
    scores = []
    for icon in pack_icons:
        mime, data = picture_bytes(icon, "icon")
        assert mime == "image/jpeg"
        back = Image.open(io.BytesIO(data))
        assert back.size == icon.size and back.mode == "RGB"
        png += len(picture_bytes(icon, "exact")[1])
        jpeg += len(data)
        scores.append(psnr_shown(icon, back))
    assert png / jpeg > 4
    assert min(scores) > 35.5 and np.mean(scores) > 37.5
    # what the same bytes buy in WebP (always 4:2:0 in Pillow): visibly worse at the size shown
    webp = [psnr_shown(i, Image.open(io.BytesIO(images._encode(i, "WEBP", {"quality": 75, "method": 6}))))
            for i in pack_icons[:8]]
    assert np.mean(webp) < np.mean(scores[:8]) - 3


def test_picture_kinds_formats_and_exact_cases():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    assert picture_data_uri(noise).startswith("data:image/jpeg;base64,")  # arrays too; "icon" by default
    assert picture_data_uri(Image.fromarray(noise), "grid").startswith("data:image/jpeg;base64,")
    assert picture_data_uri(Image.fromarray(noise), "photo").startswith("data:image/webp;base64,")
    mime, back = decode(picture_data_uri(Image.fromarray(noise), "exact"))
    assert mime == "image/png" and np.array_equal(np.asarray(back), noise)
    # transparency that matters: PNG, exactly; an opaque alpha channel is dropped and the picture encoded as asked
    rgba = np.dstack([noise, np.full((96, 96), 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    mime, back = decode(picture_data_uri(Image.fromarray(rgba, "RGBA"), "icon"))
    assert mime == "image/png" and np.array_equal(np.asarray(back), rgba)
    rgba[..., 3] = 255
    assert decode(picture_data_uri(Image.fromarray(rgba, "RGBA"), "icon"))[0] == "image/jpeg"
    # a small flat picture: PNG is smaller than any JPEG, so PNG (exact)
    flat = Image.new("RGB", (16, 16), (200, 30, 30))
    mime, back = decode(picture_data_uri(flat, "icon"))
    assert mime == "image/png" and back.getpixel((3, 3)) == (200, 30, 30)
    # a busy picture larger than JPEG's optimized-mode buffer (Pillow keeps w x h bytes for it) still encodes
    busy = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    mime, back = decode(picture_data_uri(busy, "icon"))
    assert mime == "image/jpeg" and back.size == (300, 300)
    with pytest.raises(ValueError, match="picture kind 'gif'.*icon, grid, photo, exact"):
        picture_data_uri(noise, "gif")
    assert set(PICTURE_ENCODINGS) == {"icon", "grid", "photo", "exact"}
    # png_data_uri keeps its meaning: the format asked for, PNG by default
    assert png_data_uri(Image.fromarray(noise)).startswith("data:image/png;base64,")
    assert png_data_uri(Image.fromarray(noise), "JPEG", quality=90).startswith("data:image/jpeg;base64,")


def _report_data(text: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="blocklens-data">(.*?)</script>', text, re.S)[1])


def test_a_reports_pictures_are_jpeg_webp_and_png_where_required(lite0, tiny_explanation, tmp_path):
    """The photo WebP, the grids and icons JPEG (a small icon PNG where that is smaller), and a precompute's
    sprite sheet the store's PNG: the page cuts its cells out on a canvas, so its pixels must be exact."""
    from blocklens.precompute import write_sprite
    from blocklens.recipes import recipe_for
    from blocklens.store import IconStore
    from blocklens.web.report import report_html
    from conftest import TINY_ICONS

    e, src = tiny_explanation
    data = _report_data(report_html(e))
    assert decode(data["image"])[0] == "image/webp"
    for L in data["layers"]:
        assert decode(L["grid"]["url"])[0] == "image/jpeg"
    kinds = {}
    for key, uri in data["icons"].items():
        mime, im = decode(uri)
        assert im.size == e.icons[key].to_pil().size
        kinds[mime] = kinds.get(mime, 0) + 1
    assert set(kinds) <= {"image/jpeg", "image/png"} and kinds.get("image/jpeg", 0) > len(data["icons"]) // 2

    shutil.copytree(src, tmp_path / "store")
    store = IconStore(tmp_path / "store")
    assert write_sprite(store, lite0, "blocks.7", recipe_for(**TINY_ICONS))
    data = _report_data(report_html(e, store=store))
    (sprite,) = data["sprites"]
    assert sprite["url"].startswith("data:image/png;base64,")
    sheet = store.sprite_bytes(e.fingerprint, "blocks.7", recipe_for(**TINY_ICONS))[0]
    assert base64.b64decode(sprite["url"].split(",", 1)[1]) == sheet  # the store's bytes, as they are


@pytest.mark.slow  # renders the quick preset's direction icons and grids: minutes on a CPU, unless the store is warm
def test_the_dog_report_stays_under_4_mb(capsys, tmp_path, with_pack):
    """``blocklens explain dog`` as a user runs it (the reference pack beneath the store): the report is at most
    4 MB (it was 14 MB with PNG icons). The store is $BLOCKLENS_CACHE when set (a warm one makes this quick)."""
    from blocklens.cli import main

    out = tmp_path / "dog.html"
    store = os.environ.get("BLOCKLENS_CACHE") or str(tmp_path / "store")
    assert main(["explain", "dog", "--store", store, "--out", str(out), "--quiet"]) == 0
    size = out.stat().st_size
    assert size <= 4_000_000, f"{size / 1e6:.2f} MB"
    data = _report_data(out.read_text())
    assert len(data["icons"]) > 200 and all(decode(u)[0] == "image/jpeg" for u in data["icons"].values() if u)
