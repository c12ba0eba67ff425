"""The image sizes a plan counts where it depends on them: the size cuts (WebDataset
`--shard-size`, Parquet, MDS) and TFDS's shard count.

The cut must be fixed before the first shard is written, from the inputs only.  For
the originals the stored bytes are the input bytes.  A resized variant stores far
fewer, known only once an image is resized; cutting by input bytes would give
shards 2-30x smaller than asked.  So the plan scales every input size by the ratio
stored/input measured on a fixed sample: `SAMPLE` images spread evenly over the
split's catalog (every class, in archive order), resized as the shards will be.
Same inputs, options and image libraries (a variant records and enforces them):
same ratio, same cut, whatever the workers.
"""

from __future__ import annotations

import numpy as np

from imagenet_prep.errors import BadImageError
from imagenet_prep.formats.resize import image_encoder
from imagenet_prep.sources.catalog import Catalog

SAMPLE = 256  # 0.4 s (box=64) to 1.1 s (short=256) per split here, whatever its size


def planned_sizes(cat: Catalog, order: np.ndarray | None, resize: str | None) -> np.ndarray:
    """The bytes each image of `order` (None: the catalog's order) is planned to store:
    its input size, scaled by the sample's stored/input ratio for a resized variant."""
    sizes = cat.sizes if order is None else cat.sizes[order]
    if resize is None or not len(sizes):
        return sizes
    return np.ceil(sizes * stored_ratio(cat, resize)).astype(np.int64)


def stored_ratio(cat: Catalog, resize: str) -> float:
    """Stored bytes per input byte on the sample (1.0 when no sampled image decodes:
    such images are skipped or refused by the run itself, which names them)."""
    n = len(cat)
    picks = np.unique(np.linspace(0, n - 1, min(n, SAMPLE)).round().astype(np.int64))
    sample = cat.subset(picks)
    store = image_encoder(resize)
    stored = read = 0
    with sample.open() as src:
        for i in range(len(sample)):
            try:
                stored += len(store(src.read(i), str(sample.names[i]))[0])
            except BadImageError:
                continue
            read += int(sample.sizes[i])
    return stored / read if read else 1.0
