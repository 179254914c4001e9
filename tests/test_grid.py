"""Activation grid: shapes, direction of optimization, shared group structure, seeds, errors, no leaked hooks."""
import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import blocklens as bl
from blocklens.optvis import grid as gridmod
from blocklens.optvis.grid import ActivationGrid, GridImage, activation_grid, cell_fidelity, min_cell
from blocklens.errors import BlocklensError

from test_probe import all_hooks

LAYER = "blocks.11"  # 192 channels, 7x7 at 224 px: 49 cells
SMALL = dict(cell=32, steps=24, batch_cells=16, progress=False)


@pytest.fixture(scope="module")
def dog():
    return bl.bundled_image("dog")


@pytest.fixture(scope="module")
def small_grid(lite0, dog):
    return activation_grid(lite0, dog, LAYER, **SMALL)


def test_grid_runs_with_right_shapes_and_rising_objective(small_grid, lite0):
    g = small_grid
    assert isinstance(g, ActivationGrid) and g.layer == LAYER and g.shape == (7, 7)
    assert g.cells.shape == (7, 7, 28, 28, 3) and g.cells.dtype == np.float32  # 32 px minus a 2 px border
    assert 0 <= g.cells.min() and g.cells.max() <= 1
    assert g.vectors.shape == (49, 192) and g.loadings.shape == (49, 6)
    assert np.allclose(g.loadings.max(0), 1.0)  # each group's column scaled to max 1
    assert g.magnitude.shape == (7, 7) and np.isclose(g.magnitude.max(), 1.0) and g.magnitude.min() >= 0
    assert g.history.shape == (24,)
    assert g.history[-6:].mean() > g.history[:6].mean() + 5.0
    assert g.image().size == (7 * 28, 7 * 28)
    assert "blocks.11 7x7" in repr(g)
    assert all_hooks(lite0.module) == []


def test_magnitude_image_fades_weak_cells(small_grid):
    plain, faded = np.asarray(small_grid.image()), np.asarray(small_grid.image(magnitude=True))
    assert plain.shape == faded.shape and not np.array_equal(plain, faded)
    y, x = np.unravel_index(small_grid.magnitude.argmin(), small_grid.magnitude.shape)
    weak = faded[y * 28:(y + 1) * 28, x * 28:(x + 1) * 28].astype(float)
    assert weak.mean() >= plain[y * 28:(y + 1) * 28, x * 28:(x + 1) * 28].mean() - 1  # toward white


def test_json_has_numbers_and_one_png(small_grid):
    d = json.loads(json.dumps(small_grid.to_json()))
    assert d["layer"] == LAYER and d["shape"] == [7, 7] and d["cell"] == [28, 28]
    assert len(d["magnitude"]) == 7 and len(d["history"]) == 24 and d["recipe"]["cossim_pow"] > 0
    png = Image.open(io.BytesIO(base64.b64decode(d["image_png"])))
    assert png.size == (196, 196)
    assert "image_png" not in small_grid.to_json(image=False)


def test_cell_fidelity_numbers_in_range(small_grid, lite0):
    f = cell_fidelity(lite0, small_grid)
    assert 0 <= f["top1"] <= f["fraction_matching"] <= 1 and 0 <= f["median_percentile"] <= 1
    assert -1 <= f["median_own_cosine"] <= 1 and f["n_cells"] == 49
    assert f["own_cosine"].shape == (7, 7) and f["match"].dtype == bool
    # even 24 steps put most icons closer to their own vector than to the typical other cell's
    assert f["median_percentile"] > 0.5


def test_same_seed_same_grid(lite0, dog):
    tiny = dict(cell=32, steps=3, batch_cells=8, progress=False)
    a = activation_grid(lite0, dog, LAYER, **tiny)
    b = activation_grid(lite0, dog, LAYER, **tiny)
    assert np.array_equal(a.cells, b.cells) and np.array_equal(a.history, b.history)
    assert a.recipe == b.recipe and a.recipe["seed"] == 0


def test_grid_image_shares_group_structure():
    loadings = np.array([[1.0, 0.0], [0.5, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    param = GridImage(loadings, size=16, seed=0)
    before = param().detach()
    assert before.shape == (4, 3, 16, 16)
    assert torch.equal(GridImage(loadings, size=16, seed=0)().detach(), before)
    assert not torch.equal(GridImage(loadings, size=16, seed=1)().detach(), before)
    assert torch.equal(param(torch.tensor([2, 0])).detach(), before[[2, 0]])
    with torch.no_grad():
        param.groups[0] += 0.5 * torch.randn_like(param.groups[0])
    changed = (param().detach() - before).abs().flatten(1).amax(1) > 1e-6
    assert changed.tolist() == [True, True, False, False]  # every cell loading on group 0, only those
    with torch.no_grad():
        param.own[3] += 0.5
    assert ((param().detach() - before).abs().flatten(1).amax(1) > 1e-6).tolist() == [True, True, False, True]


def test_bad_inputs_raise_clear_errors(lite0, dog):
    with pytest.raises(BlocklensError, match="positions"):
        activation_grid(lite0, dog, "fc", progress=False)
    assert min_cell(lite0, LAYER) == 32 and min_cell(lite0, "blocks.9") == 16
    with pytest.raises(BlocklensError, match=r"too small.*cell >= 32"):
        activation_grid(lite0, dog, LAYER, cell=16, progress=False)
    with pytest.raises(BlocklensError, match="border"):
        activation_grid(lite0, dog, LAYER, cell=32, border=16, progress=False)
    assert all_hooks(lite0.module) == []


def test_no_hooks_left_after_an_error_mid_run(lite0, dog, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("objective failed")

    monkeypatch.setattr(gridmod.obj, "direction", boom)
    with pytest.raises(RuntimeError, match="objective failed"):
        activation_grid(lite0, dog, LAYER, cell=32, steps=2, batch_cells=4, progress=False)
    assert all_hooks(lite0.module) == []


# --- activation_grid's phases, each alone -----------------------------------------------------------------------


def test_tiled_cells_crop_the_border_row_major():
    rendered = torch.arange(6 * 3 * 8 * 8, dtype=torch.float32).reshape(6, 3, 8, 8)
    cells = gridmod._tiled_cells(rendered, (2, 3), border=2)
    assert cells.shape == (2, 3, 4, 4, 3) and cells.dtype == np.float32
    assert np.array_equal(cells[1, 2], rendered[5, :, 2:6, 2:6].permute(1, 2, 0).numpy())  # n = y * W + x
    assert gridmod._tiled_cells(rendered, (3, 2), border=0).shape == (3, 2, 8, 8, 3)


def test_grid_vectors_and_one_loop_step(lite0, dog):
    from blocklens.analyses.common import prepare

    info = lite0.layer(LAYER)
    vectors, magnitude, loadings, fi = gridmod._grid_vectors(lite0, prepare(lite0, dog), info, 3, seed=0)
    assert vectors.shape == (49, 192) and magnitude.shape == (7, 7) and loadings.shape == (49, 3)
    assert float(magnitude.max()) == pytest.approx(1.0) and set(fi) == {"relative_error", "signed"}
    assert torch.allclose(magnitude.flatten(), vectors.norm(dim=1) / vectors.norm(dim=1).max())
    loop = gridmod._GridLoop(lite0, info, GridImage(loadings, 32, seed=0), vectors, steps=2, batch_cells=100,
                             cossim_pow=1.0, lr=0.05, seed=0, rescue_steps=16, contrast=0.5)
    assert loop.n == 49 and loop.bsize == 49  # never more cells than the grid has
    with gridmod.relu_rescue(lite0.module) as rescue, lite0.probe([info], grad=True) as probe:
        loop.step(0, probe, rescue)
    assert loop.history[0] != 0 and loop.history[1] == 0 and loop.grid.standardize == 0.0
    assert loop.rendered().shape == (49, 3, 32, 32)
    assert all_hooks(lite0.module) == []
