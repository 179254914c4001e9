"""A model whose reason we know: a two-class head over frozen EfficientNet-Lite0 features, trained (seeded, on the
CPU, in seconds) on photographs where only one class carries a small synthetic mark. Used by tests/test_concepts.py,
bench/bench_concepts.py and docs/concepts.py."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import blocklens as bl
from blocklens.images import bundled_images

SIDE = 256          # files are written at the size the model resizes to (shorter side 224 + 32), so the 224 px
OFFSET = 16         # frame the model sees is the centre crop: frame coordinates = file coordinates - 16

#: The marks: a shape, a colour, its centre (x, y) in the model's 224 px frame and its side in pixels.
MARK = {"shape": "square", "colour": (255, 0, 200), "centre": (180, 44), "size": 24}
OTHER_MARK = {"shape": "disc", "colour": (0, 220, 255), "centre": (52, 170), "size": 28}


def draw_mark(img: Image.Image, mark: dict) -> Image.Image:
    img = img.copy()
    d = ImageDraw.Draw(img)
    cx, cy = mark["centre"][0] + OFFSET, mark["centre"][1] + OFFSET
    r = mark["size"] / 2
    box = [cx - r, cy - r, cx + r, cy + r]
    if mark["shape"] == "disc":
        d.ellipse(box, fill=mark["colour"])
    elif mark["shape"] == "cross":
        w = mark["size"] / 5
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=mark["colour"])
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=mark["colour"])
    else:
        d.rectangle(box, fill=mark["colour"])
        d.rectangle([cx - r / 3, cy - r / 3, cx + r / 3, cy + r / 3], fill=(255, 255, 255))
    return img


def _views(photo: Path, n: int, rng: np.random.Generator) -> list[Image.Image]:
    """``n`` random crops (60..100% of the shorter side), some mirrored, of one photograph, at SIDE px."""
    img = Image.open(photo).convert("RGB")
    out = []
    for _ in range(n):
        s = int(min(img.size) * rng.uniform(0.6, 1.0))
        x0 = int(rng.integers(0, img.width - s + 1))
        y0 = int(rng.integers(0, img.height - s + 1))
        v = img.crop((x0, y0, x0 + s, y0 + s)).resize((SIDE, SIDE), Image.BICUBIC)
        out.append(v.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else v)
    return out


def make_folder(root: Path, per_class: int, mark: dict | None = MARK, seed: int = 0,
                names: tuple[str, str] = ("marked", "plain")) -> Path:
    """An ImageFolder of two classes. With a ``mark``: both classes hold the same views of the six bundled
    photographs (view i of one class is view i of the other) and only the first class carries the mark, so the mark
    is all that tells them apart. Without one (the control): the first class shows the dogs, the second the other
    photographs, and no image is marked."""
    rng = np.random.default_rng(seed)
    photos = bundled_images()
    if mark is not None:
        per_photo = -(-per_class // len(photos))
        views = [v for p in photos.values() for v in _views(p, per_photo, rng)]
        order = rng.permutation(len(views))[:per_class]
        for name in names:
            (root / name).mkdir(parents=True, exist_ok=True)
        for i, j in enumerate(order):
            draw_mark(views[j], mark).save(root / names[0] / f"{i:03d}.png")
            views[j].save(root / names[1] / f"{i:03d}.png")
        return root
    else:
        dogs = [photos[n] for n in ("dog", "collies", "multiple_dogs")]
        sources = (dogs, [p for n, p in photos.items() if n not in ("dog", "collies", "multiple_dogs")])
    for ci, (name, src) in enumerate(zip(names, sources)):
        (root / name).mkdir(parents=True, exist_ok=True)
        per_photo = -(-per_class // len(src))
        views = [v for p in src for v in _views(p, per_photo, rng)]
        rng.shuffle(views)
        for i, v in enumerate(views[:per_class]):
            v.save(root / name / f"{i:03d}.png")
    return root


def train_head(lite0, folder: Path, names: tuple[str, str] = ("marked", "plain"), seed: int = 0,
               steps: int = 300) -> "bl.Model":
    """Lite0 with its classifier replaced by a two-class linear head, trained (logistic loss, Adam, seeded) on the
    frozen pooled features of ``folder``'s images; every other weight is Lite0's."""
    
    net = copy.deepcopy(lite0.module)
    feats, ys = [], []
    grab = {}
    hook = net.fc.register_forward_hook(lambda m, i, o: grab.__setitem__("f", i[0].detach()))
    try:
        with torch.no_grad():
            for ci, name in enumerate(names):
                for p in sorted((folder / name).glob("*.png")):
                    x, _ = lite0.prepare(p)
                    net(x)
                    feats.append(grab["f"][0])
                    ys.append(ci)
    finally:
        hook.remove()
    f, y = torch.stack(feats), torch.tensor(ys)
    gen = torch.Generator().manual_seed(seed)
    fc = torch.nn.Linear(f.shape[1], 2)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen) * 0.01)
        fc.bias.zero_()
    opt = torch.optim.Adam(fc.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(fc(f), y) + 1e-3 * fc.weight.pow(2).sum()
        loss.backward()
        opt.step()
    net.fc = fc.requires_grad_(False)
    model = bl.wrap(net, labels=list(names), normalize=lite0.normalize, input_size=lite0.input_size,
                    resize=lite0.resize, name="lite0-head-" + "-".join(names))
    model.train_accuracy = float((fc(f).argmax(1) == y).float().mean())
    return model
