"""Semantic dictionary: the top channels at every position, and their icons."""
import json

import numpy as np
import pytest
import torch

import blocklens as bl
from blocklens.blocks import semantic_dictionary
from blocklens.errors import BlocklensError

from conftest import assert_close


def test_top_channels_at_every_position(lite0):
    d = semantic_dictionary(lite0, bl.bundled_image("dog"), "blocks.7", top=4)
    assert d.channels.shape == (14, 14, 4) and d.values.shape == (14, 14, 4)
    act = lite0.activations(lite0.preprocess(bl.bundled_image("dog")), "blocks.7")["blocks.7"][0]
    for x, y in [(0, 0), (6, 9), (13, 2)]:
        expect = torch.argsort(act[:, y, x], descending=True)[:4].tolist()
        assert [c for c, _ in d.at(x, y)] == expect
        assert np.all(np.diff(d.values[y, x]) <= 0)
    assert_close(d.magnitude, act.norm(dim=0))
    assert set(d.used_channels) == set(np.unique(d.channels).tolist())
    json.dumps(d.to_json())


def test_icons_for_every_used_channel(lite0, tmp_path):
    d = semantic_dictionary(lite0, bl.bundled_image("coffee"), "blocks.15", top=1, icons=True, store=tmp_path,
                            size=32, steps=2, progress=False)
    assert set(d.icons) == set(d.used_channels)
    assert all(i.meta["layer"] == "blocks.15" for i in d.icons.values())


def test_bad_input(lite0):
    with pytest.raises(BlocklensError, match="positions"):
        semantic_dictionary(lite0, bl.bundled_image("dog"), "fc")
    with pytest.raises(BlocklensError, match="top=500"):
        semantic_dictionary(lite0, bl.bundled_image("dog"), "blocks.7", top=500)
    d = semantic_dictionary(lite0, bl.bundled_image("dog"), "blocks.7")
    with pytest.raises(BlocklensError, match="outside"):
        d.at(14, 0)
