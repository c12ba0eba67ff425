"""TensorFlow Datasets' own preparation of imagenet2012 from a folder of archives (a
benchmark baseline): `tfds_own.py MANUAL_DIR DATA_DIR`.

`download_and_prepare` reads ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (and
the test archive when present) from MANUAL_DIR, as its builder documents.  etils asks
for the `importlib_resources` backport, which some environments lack although Python
3.11's `importlib.resources` has what it needs: the standard module stands in then.
"""

from __future__ import annotations

import importlib.resources
import sys

try:
    import importlib_resources  # noqa: F401
except ImportError:
    sys.modules["importlib_resources"] = importlib.resources

import tensorflow_datasets as tfds  # noqa: E402


def main() -> None:
    manual, data_dir = sys.argv[1], sys.argv[2]
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual))


if __name__ == "__main__":
    main()
