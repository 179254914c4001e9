"""Tests for blocklens.optvis.param and blocklens.optvis.transforms against small NumPy references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from blocklens.optvis.param import (
    COLOR_CORRELATION_NORMALIZED,
    FourierImage,
    PixelImage,
    image,
    to_valid_rgb,
)
from blocklens.optvis.transforms import (
    DEFAULT_SCALES,
    Compose,
    Jitter,
    Pad,
    RandomRotate,
    RandomScale,
    jitter,
    pad,
    rotate,
    scale,
    standard_transforms,
)

# Lucid's colour correlation matrix, written out independently of the module under test.
COLOR_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def np_to_valid_rgb(t: np.ndarray, decorrelate: bool = True) -> np.ndarray:
    """(B, C, H, W) -> decorrelate the first 3 channels (t @ M.T per pixel) -> sigmoid."""
    if decorrelate:
        m = COLOR_SVD_SQRT / np.linalg.norm(COLOR_SVD_SQRT, axis=0).max()
        t = t.copy()
        rgb = np.moveaxis(t[:, :3], 1, -1) @ m.T  # (B, H, W, 3)
        t[:, :3] = np.moveaxis(rgb, -1, 1)
    return 1 / (1 + np.exp(-t))


def np_fourier_image(spectrum: np.ndarray, h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """NumPy reference for FourierImage: spectrum (B, C, H, W//2+1, 2) -> (B, C, H, W) pre-colour image."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freqs = np.sqrt(fy**2 + fx**2)
    scl = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay_power * np.sqrt(h * w)
    coeffs = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scl
    return np.fft.irfft2(coeffs, s=(h, w), axes=(-2, -1)) / 4


# --- param --------------------------------------------------------------------------------


def test_color_matrix_normalized():
    m = COLOR_CORRELATION_NORMALIZED.double().numpy()
    assert np.linalg.norm(m, axis=0).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(m, COLOR_SVD_SQRT / np.linalg.norm(COLOR_SVD_SQRT, axis=0).max(), atol=1e-7)


@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("decay_power", [1.0, 1.5])
def test_fourier_image_matches_numpy(alpha, decay_power):
    h, w = 7, 10
    p = FourierImage(batch=2, size=(h, w), alpha=alpha, sd=0.5, decay_power=decay_power, seed=0)
    c = 4 if alpha else 3
    assert p.spectrum.shape == (2, c, h, w // 2 + 1, 2)
    img = p()
    assert img.shape == (2, c, h, w) and img.dtype == torch.float32
    assert (img > 0).all() and (img < 1).all()
    ref = np_to_valid_rgb(np_fourier_image(p.spectrum.detach().double().numpy(), h, w, decay_power))
    np.testing.assert_allclose(img.detach().numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("size", [(9, 9), (8, 11), (6, 6)])
def test_fourier_image_sizes_and_no_decorrelate(size):
    p = FourierImage(size=size, sd=0.3, decorrelate=False, seed=1)
    ref = np_to_valid_rgb(np_fourier_image(p.spectrum.detach().double().numpy(), *size), decorrelate=False)
    np.testing.assert_allclose(p().detach().numpy(), ref, atol=1e-5)


def test_fourier_image_seed_determinism():
    a = FourierImage(batch=2, size=12, seed=3)()
    b = FourierImage(batch=2, size=12, seed=3)()
    c = FourierImage(batch=2, size=12, seed=4)()
    g = torch.Generator().manual_seed(3)
    d = FourierImage(batch=2, size=12, generator=g)()
    assert torch.equal(a, b) and torch.equal(a, d)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError):
        FourierImage(seed=0, generator=torch.Generator())


def test_fourier_image_attributes_and_grad():
    p = FourierImage(batch=3, size=(5, 8), seed=0)
    assert p.batch == 3 and p.size == (5, 8)
    assert "size=(5, 8)" in repr(p)
    p().sum().backward()
    assert p.spectrum.grad is not None and p.spectrum.grad.abs().sum() > 0


def test_pixel_image_shape_grad_and_reference():
    p = PixelImage(batch=2, size=(6, 9), alpha=True, sd=0.5, seed=0)
    assert p.batch == 2 and p.size == (6, 9)
    img = p()
    assert img.shape == (2, 4, 6, 9)
    ref = np_to_valid_rgb(p.pixels.detach().double().numpy())
    np.testing.assert_allclose(img.detach().numpy(), ref, atol=1e-6)
    img[:, :3].mean().backward()
    assert p.pixels.grad is not None and p.pixels.grad.abs().sum() > 0
    assert torch.equal(PixelImage(size=4, seed=2)(), PixelImage(size=4, seed=2)())


def test_to_valid_rgb_alpha_not_mixed():
    t = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    out = to_valid_rgb(t)
    torch.testing.assert_close(out[:, 3], torch.sigmoid(t[:, 3]))
    with pytest.raises(ValueError):
        to_valid_rgb(torch.zeros(1, 5, 2, 2))


def test_image_factory():
    assert isinstance(image(8, fft=True), FourierImage)
    assert isinstance(image(8, fft=False), PixelImage)


# --- transforms ---------------------------------------------------------------------------


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_pad_matches_numpy():
    x = _rand(2, 3, 5, 7)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), constant_values=0.5)
    np.testing.assert_array_equal(Pad(3, value=0.5)(x).numpy(), ref)
    np.testing.assert_array_equal(pad(x, 3, 0.5).numpy(), ref)


@pytest.mark.parametrize("ox,oy", [(0, 0), (3, 1), (4, 4), (2, 0)])
def test_jitter_fixed_offsets_match_slicing(ox, oy):
    x = _rand(2, 3, 9, 12)
    d = 4
    ref = x.numpy()[..., oy : oy + 9 - d, ox : ox + 12 - d]
    np.testing.assert_array_equal(jitter(x, d, ox, oy).numpy(), ref)


def test_jitter_random_shape_and_offset_range():
    x = _rand(1, 3, 10, 10)
    t = Jitter(3)
    g = torch.Generator().manual_seed(0)
    assert t(x, generator=g).shape == (1, 3, 7, 7)
    offsets = {t.sample(g) for _ in range(200)}
    assert offsets == {(i, j) for i in range(4) for j in range(4)}


def test_scale_identity_and_sizes():
    x = _rand(2, 3, 11, 16)
    torch.testing.assert_close(scale(x, 1.0), x, atol=1e-6, rtol=0)
    assert scale(x, 1.1).shape == (2, 3, round(11 * 1.1), round(16 * 1.1))
    assert scale(x, 0.9).shape == (2, 3, round(11 * 0.9), round(16 * 0.9))
    assert scale(x, 2.0).shape == (2, 3, 22, 32)
    g = torch.Generator().manual_seed(0)
    out = RandomScale()(x, generator=g)
    assert out.shape[-2:] in {(round(11 * s), round(16 * s)) for s in DEFAULT_SCALES}


def test_rotate_identity():
    x = _rand(2, 3, 8, 13)
    torch.testing.assert_close(rotate(x, 0), x, atol=1e-5, rtol=0)


def test_rotate_90_is_rot90_counter_clockwise():
    x = _rand(2, 3, 9, 9)
    ref = np.rot90(x.numpy(), k=1, axes=(-2, -1))
    out = rotate(x, 90).numpy()
    # Sampling points land on pixel centres, so the whole image matches; the interior certainly does.
    np.testing.assert_allclose(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    np.testing.assert_allclose(rotate(x, -90).numpy(), np.rot90(x.numpy(), k=-1, axes=(-2, -1)), atol=1e-4)


def test_rotate_180_is_double_flip():
    x = _rand(1, 3, 10, 10)
    ref = np.flip(x.numpy(), axis=(-2, -1))
    np.testing.assert_allclose(rotate(x, 180).numpy()[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)


def test_rotate_non_square_keeps_shape_and_180_flips():
    x = _rand(1, 2, 6, 10)
    out = rotate(x, 180)
    assert out.shape == x.shape
    ref = np.flip(x.numpy(), (-2, -1))
    np.testing.assert_allclose(out.numpy()[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)
    assert RandomRotate()(x, generator=torch.Generator().manual_seed(0)).shape == x.shape


def test_standard_transforms_size_grad_repeatable():
    t = standard_transforms()
    assert [type(m) for m in t.transforms] == [Pad, Jitter, RandomScale, RandomRotate, Jitter]
    assert (t[0].width, t[0].value, t[1].d, t[4].d) == (12, 0.5, 8, 4)
    lo, hi = round(144 * 0.9) - 4, round(144 * 1.1) - 4
    x = _rand(2, 3, 128, 128).requires_grad_()
    for seed in range(5):
        out = t(x, generator=torch.Generator().manual_seed(seed))
        assert out.shape[:2] == (2, 3) and out.shape[-1] == out.shape[-2]
        assert lo <= out.shape[-1] <= hi
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    a = t(x, generator=torch.Generator().manual_seed(7))
    b = t(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_compose_forwards_generator_and_plain_modules():
    x = _rand(1, 3, 12, 12)
    c = Compose([Jitter(2), torch.nn.Identity(), Jitter(2)])
    assert len(c) == 3
    a = c(x, generator=torch.Generator().manual_seed(1))
    b = c(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 3, 8, 8) and torch.equal(a, b)
