"""Contact sheets: icons side by side with their labels, for the command line and the README."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def contact_sheet(images: Sequence[np.ndarray | Image.Image], labels: Sequence[str] | None = None,
                  columns: int | None = None, cell: int = 160, pad: int = 4, label_height: int = 16) -> Image.Image:
    """Tile ``images`` (uint8 HxWx3 arrays or PIL images) on a white sheet, each with its label below."""
    n = len(images)
    if n == 0:
        raise ValueError("contact_sheet needs at least one image")
    columns = columns or min(n, 8)
    rows = math.ceil(n / columns)
    lh = label_height if labels else 0
    sheet = Image.new("RGB", (columns * (cell + pad) + pad, rows * (cell + lh + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, im in enumerate(images):
        im = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))
        r, c = divmod(i, columns)
        x, y = pad + c * (cell + pad), pad + r * (cell + lh + pad)
        sheet.paste(im.convert("RGB").resize((cell, cell), Image.LANCZOS), (x, y))
        if labels:
            text = str(labels[i])
            while draw.textlength(text, font=font) > cell and len(text) > 4:
                text = text[:-2] + "…"
            draw.text((x + 2, y + cell + 2), text, fill="black", font=font)
    return sheet
