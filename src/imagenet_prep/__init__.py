"""imagenet-prep: the official ILSVRC2012 archives to TensorFlow and PyTorch datasets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("imagenet-prep")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

from imagenet_prep.errors import PrepError

__all__ = ["PrepError", "__version__"]
