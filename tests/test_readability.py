"""The machine readability score (blocklens.dataset.readability): a unit whose top patches all show one planted mark
is read almost every time; units whose patches were dealt at random score chance, within their standard error."""
import numpy as np
import pytest

from blocklens.dataset.examples import patch_box
from blocklens.dataset.readability import Judge, Patch, Unit, readability
from blocklens.errors import BlocklensError
import planted

MARK = {"shape": "square", "colour": (255, 0, 200), "centre": (112, 112), "size": 48}
SIDE = 96        # the patches' side in the 224 px frame: the mark fills a quarter of its box


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 views of the bundled photographs (no two alike): the first 12 carry the mark at the frame's centre."""
    root = tmp_path_factory.mktemp("readable")
    rng = np.random.default_rng(0)
    photos = sorted(planted.bundled_images().values())
    views = [v for p in photos for v in planted._views(p, 4, rng)][:24]
    for i, v in enumerate(views):
        (planted.draw_mark(v, MARK) if i < 12 else v).save(root / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def judge(lite0):
    return Judge(lite0)


def _box(rng) -> tuple:
    return patch_box(int(rng.integers(7)), int(rng.integers(7)), (7, 7), 224, SIDE)


def test_a_unit_whose_top_patches_all_show_the_planted_mark_scores_near_one(lite0, folder, judge):
    centre = patch_box(3, 3, (7, 7), 224, SIDE)          # the box around the mark
    rng = np.random.default_rng(1)
    unit = Unit("mark", top=[Patch(f"{i:03d}.png", centre) for i in range(12)],
                bottom=[Patch(f"{i:03d}.png", centre) for i in range(12, 24)],   # the same place, no mark
                random=[Patch(f"{int(i):03d}.png", _box(rng)) for i in rng.choice(np.arange(12, 24), 12, replace=False)])
    got = readability(lite0, [unit], judge=judge, trials=60, root=folder)
    for contrast in ("bottom", "random"):
        r = got[contrast]
        assert r.trials == 60 and r.units == 1 and r.chance == 0.5
        assert r.score >= 0.9, (contrast, r.score)
        assert r.per_unit["mark"] == r.score and 0 <= r.se <= 0.05


def test_units_whose_patches_were_dealt_at_random_score_chance(lite0, folder, judge):
    rng = np.random.default_rng(2)
    pool = [Patch(f"{int(rng.integers(24)):03d}.png", _box(rng)) for _ in range(48)]
    units = []
    for u in range(40):
        pick = rng.permutation(len(pool))
        units.append(Unit(f"u{u}", top=[pool[i] for i in pick[:6]], bottom=[pool[i] for i in pick[6:12]],
                          random=[pool[i] for i in pick[12:18]]))
    got = readability(lite0, units, judge=judge, trials=15, root=folder, seed=3)
    for contrast, r in got.items():
        assert r.trials == 600 and r.units == 40
        tol = 3 * max(r.se, r.se_units)
        assert abs(r.score - 0.5) <= tol, (contrast, r.score, r.se, r.se_units)
        assert 0.01 < r.se < 0.03                       # sqrt(.25 / 600) = 0.020
    # the figures of a part are those of its own trials
    part = got["bottom"].subset(["u0", "u1"])
    assert part.units == 2 and part.trials == 30
    assert part.score == pytest.approx((got["bottom"].per_unit["u0"] + got["bottom"].per_unit["u1"]) / 2)


def test_a_unit_with_too_few_top_patches_is_skipped_and_bad_requests_are_clear_errors(lite0, folder, judge):
    box = patch_box(0, 0, (7, 7), 224, SIDE)
    thin = Unit("thin", top=[Patch("000.png", box), Patch("001.png", box)], bottom=[Patch("002.png", box)])
    got = readability(lite0, [thin], judge=judge, root=folder, contrasts=("bottom",))
    assert got["bottom"].skipped == ["thin"] and got["bottom"].trials == 0 and list(got) == ["bottom"]
    with pytest.raises(BlocklensError, match="unknown contrast 'worst'"):
        readability(lite0, [thin], judge=judge, root=folder, contrasts=("worst",))
    with pytest.raises(BlocklensError, match="trials must be at least 1"):
        readability(lite0, [thin], judge=judge, root=folder, trials=0)
    gone = Unit("gone", top=[Patch("missing.png", box)] * 3, bottom=[Patch("000.png", box)])
    with pytest.raises(BlocklensError, match=f"readability trials \\(folder {folder}\\)"):
        readability(lite0, [gone], judge=judge, root=folder)
