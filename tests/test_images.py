"""Every image file is hostile until decoded within limits; every colour mode becomes RGB."""
import io
import time

import pytest
from PIL import Image

import blocklens as bl
from blocklens.errors import ImageError
from blocklens.images import load_image


def _bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1"])
def test_modes_convert_to_rgb(mode, tmp_path):
    rgb = Image.open(bl.bundled_image("chelsea")).convert("RGB").resize((64, 48))
    img = rgb.convert(mode) if mode != "I;16" else rgb.convert("L").convert("I;16")
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, fmt)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (64, 48)


def test_rgba_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert load_image(_bytes(img, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] * 256)
    img.info["transparency"] = 0
    assert load_image(_bytes(img, "PNG", transparency=0)).getpixel((1, 1)) == (255, 255, 255)


def test_exif_orientation_applied():
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    out = load_image(_bytes(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_missing_directory_empty_not_image(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "text.jpg").write_text("this is not a picture")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "text.jpg")


def test_truncated_image():
    data = bl.bundled_image("dog").read_bytes()
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 3])


def test_decompression_bomb_refused_from_header():
    bomb = _bytes(Image.new("1", (12000, 6000)), "PNG")  # 72 Mpx, about 10 kB on disk
    assert len(bomb) < 100_000
    t = time.perf_counter()
    with pytest.raises(ImageError, match="limit"):
        load_image(bomb)
    assert time.perf_counter() - t < 1.0
    with pytest.raises(ImageError, match="limit is 100"):
        load_image(_bytes(Image.new("RGB", (20, 20)), "PNG"), max_pixels=100)


def test_byte_cap(tmp_path):
    with pytest.raises(ImageError, match="bytes"):
        load_image(bl.bundled_image("coffee"), max_bytes=1000)


def test_bundled_images_have_provenance():
    images = bl.images.bundled_images()
    sources = (bl.images.BUNDLED_DIR / "SOURCES.md").read_text()
    assert {"chelsea", "dog", "coffee", "collies"} <= set(images)
    for path in images.values():
        assert path.name in sources
