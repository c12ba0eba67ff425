"""Real photographs for the resize benchmark, cut from the sample photos in scikit-image.

The replica's images are synthetic; the speed of a reduced JPEG decode and the PSNR it
costs depend on what a photo holds (its spectrum) and on how many bytes it has (the
Huffman decoding of every coefficient is most of a decode). So the benchmark also runs
on real photos: five colour photographs that scikit-image's wheel carries (astronaut,
NASA, public domain; Chelsea the cat and coffee, CC0; the Middlebury motorcycle;
a rocket launch, public domain), cut into 500x375 or 375x500 crops (or the largest
crop of that shape a photo holds) at seeded offsets, half of them mirrored, and saved
as baseline JPEG 4:2:0 at one quality. ImageNet's images average about 110 KB; the
same crops at quality 98 come to about 97 KB, at quality 90 to about 45 KB.

Nothing is bundled: without scikit-image (`pip install -e '.[bench]'`) the rows are
left out and the table says so.
"""

from __future__ import annotations

import importlib.util
import io
import random
from pathlib import Path

from PIL import Image

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
SHAPE = (500, 375)  # ImageNet's typical landscape size; portrait crops are 375x500


def photo_dir() -> Path | None:
    """scikit-image's bundled `data/` folder, or None when it is not installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return None
    here = Path(spec.origin).parent / "data"
    return here if all((here / name).is_file() for name in PHOTOS) else None


def _crop(photo: Image.Image, rng: random.Random) -> Image.Image:
    w, h = photo.size
    cw, ch = SHAPE if rng.random() < 0.75 else SHAPE[::-1]  # ImageNet: mostly landscape
    if cw > w or ch > h:  # the largest crop of that shape the photo holds
        shrink = max(cw / w, ch / h)
        cw, ch = int(cw / shrink), int(ch / shrink)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = photo.crop((x, y, x + cw, y + ch))
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def real_photos(count: int, quality: int) -> list[bytes] | None:
    """`count` JPEG crops of the real photos at `quality` (the same crops for every
    quality), or None without scikit-image."""
    where = photo_dir()
    if where is None:
        return None
    photos = [Image.open(where / name).convert("RGB") for name in PHOTOS]
    rng = random.Random(2012)
    out = []
    for i in range(count):
        buf = io.BytesIO()
        _crop(photos[i % len(photos)], rng).save(buf, "JPEG", quality=quality,
                                                  subsampling="4:2:0")
        out.append(buf.getvalue())
    return out
