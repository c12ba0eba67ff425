"""Resized variants: the geometry rule, the fast resize and the stored bytes of one image.

The fast path decodes a YCbCr or grayscale JPEG with libjpeg-turbo's TurboJPEG
interface (through simplejpeg) at M/8 of its size, M = 1..8, the smallest scale at
which the decoded image is still at least the target in both directions, then
resamples once with Lanczos to the exact size and encodes once.  Other images take
Pillow's `draft` (1/2, 1/4 or 1/8).  docs/resize.md states the rules (rounding,
images too small to shrink, colour modes) and what the reduced decode costs in
quality (PSNR).
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, features

from imagenet_prep.errors import BadImageError, OptionError
from imagenet_prep.formats.images import (
    _gunzip,
    _why,
    conversion_reason,
    jpeg_for_record,
    jpeg_frame,
    probe,
)
from imagenet_prep.layout import VARIANT_LIBRARIES

MODES = ("short", "max", "box")
FORMATS = ("jpeg", "webp")
DEFAULT_QUALITY = 90
FILTER = Image.Resampling.LANCZOS
DRAFT_MARGIN = 1  # the reduced decode keeps >= the target in both directions
EXTENSION = {"jpeg": "jpg", "webp": "webp"}
PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP"}
_SPEC = re.compile(r"(short|max|box)=(\d+)")


@dataclass(frozen=True, slots=True)
class ResizeSpec:
    """What a variant stores: `mode` short|max|box, `size` in pixels, encoder and quality."""

    mode: str
    size: int
    quality: int = DEFAULT_QUALITY
    image_format: str = "jpeg"
    full_decode: bool = False  # never a reduced decode: the reference path's exact pixels

    @property
    def tag(self) -> str:
        """The variant's folder name: `short256`, `box64`; other than JPEG quality 90 adds
        `_q75`, `_webp`, `_full` (so variants of one size but other bytes sit side by side)."""
        tag = f"{self.mode}{self.size}"
        if self.quality != DEFAULT_QUALITY:
            tag += f"_q{self.quality}"
        return tag + ("_webp" if self.image_format == "webp" else "") + \
            ("_full" if self.full_decode else "")

    @property
    def text(self) -> str:
        """The options as one string: `short=256 q90 jpeg` (recorded in shard states)."""
        return f"{self.mode}={self.size} q{self.quality} {self.image_format}" + \
            (" full-decode" if self.full_decode else "")

    @property
    def extension(self) -> str:
        return EXTENSION[self.image_format]

    def as_dict(self) -> dict[str, object]:
        return {"resize": f"{self.mode}={self.size}", "quality": self.quality,
                "image_format": self.image_format, "full_decode": self.full_decode}


def parse(resize: str | None, quality: int | None = None, image_format: str | None = None,
          full_decode: bool = False) -> ResizeSpec | None:
    """`--resize none|short=S|max=M|box=B`, `--quality`, `--image-format`, `--full-decode`
    -> a spec (None: no resizing).  Without resizing, the other three are refused."""
    if resize is None or resize == "none":
        if quality is not None or (image_format not in (None, "jpeg")) or full_decode:
            raise OptionError("--quality, --image-format and --full-decode apply with "
                              "--resize short=S, max=M or box=B")
        return None
    m = _SPEC.fullmatch(resize.strip())
    if m is None:
        raise OptionError(f"--resize {resize}: expected none, short=S, max=M or box=B "
                          "(S, M, B in pixels)")
    size = int(m.group(2))
    if not 1 <= size <= 16384:
        raise OptionError(f"--resize {resize}: the size must be 1..16384 pixels")
    q = DEFAULT_QUALITY if quality is None else quality
    if not 1 <= q <= 100:
        raise OptionError(f"--quality {q}: must be 1..100")
    fmt = image_format or "jpeg"
    if fmt not in FORMATS:
        raise OptionError(f"--image-format {fmt}: choose from {', '.join(FORMATS)}")
    return ResizeSpec(m.group(1), size, q, fmt, full_decode)


def from_text(text: str | None) -> ResizeSpec | None:
    """The spec `ResizeSpec.text` wrote (None stays None)."""
    if text is None:
        return None
    what, q, fmt, *rest = text.split()
    return parse(what, int(q[1:]), fmt, "full-decode" in rest)


def _round(x: float) -> int:
    """Half up, at least one pixel (the geometry rule of docs/resize.md)."""
    return max(1, math.floor(x + 0.5))


def target_size(spec: ResizeSpec, width: int, height: int) -> tuple[int, int] | None:
    """The stored size, or None when the image is kept at its size (short and max never
    enlarge: an image whose side is already <= the target is not resized)."""
    if spec.mode == "box":
        return spec.size, spec.size
    if spec.mode == "short":
        short = min(width, height)
        if short <= spec.size:
            return None
        scale = spec.size / short
    else:
        long = max(width, height)
        if long <= spec.size:
            return None
        scale = spec.size / long
    # the constrained side is exact; the other is rounded half up
    if (width <= height) == (spec.mode == "short"):
        return spec.size, _round(height * scale)
    return _round(width * scale), spec.size


def versions() -> dict[str, str | None]:
    """The image libraries whose output a variant's bytes are (recorded with the variant,
    under the keys layout.VARIANT_LIBRARIES)."""
    import PIL

    found = (PIL.__version__, features.version("jpg"),
             features.version_feature("libjpeg_turbo"), features.version("webp"),
             simplejpeg.__version__)
    return dict(zip(VARIANT_LIBRARIES, found, strict=True))


def _open(data: bytes, where: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(io.BytesIO(data))
    except Exception as e:
        raise BadImageError(f"{where}: not a readable image ({_why(e)})") from None


def _pixels(im: Image.Image, spec: ResizeSpec) -> Image.Image:
    """Decoded pixels in the stored mode: L stays L for JPEG, everything else RGB (WebP
    has no grayscale mode); 16-bit grayscale is scaled to 8 bits; alpha is dropped."""
    im.load()
    if im.mode.startswith("I;16") or im.mode == "I":
        im = im.point(lambda v: v / 256).convert("L")
    if im.mode == "L" and spec.image_format == "jpeg":
        return im
    return im.convert("RGB") if im.mode != "RGB" else im


def _encode(im: Image.Image, spec: ResizeSpec) -> bytes:
    """One encode, no metadata (EXIF, ICC, comments) carried over."""
    out = io.BytesIO()
    if spec.image_format == "jpeg":
        im.save(out, "JPEG", quality=spec.quality, subsampling="4:2:0", optimize=False,
                progressive=False, icc_profile=None, exif=b"")
    else:
        im.save(out, "WEBP", quality=spec.quality, method=4, icc_profile=None, exif=b"")
    return out.getvalue()


def eighths(width: int, height: int, size: tuple[int, int]) -> int:
    """The smallest M in 1..8 whose decode at M/8 (each side rounded up, as libjpeg does)
    is still at least `size` in both directions."""
    for m in range(1, 8):
        if -(-width * m // 8) >= size[0] * DRAFT_MARGIN and \
                -(-height * m // 8) >= size[1] * DRAFT_MARGIN:
            return m
    return 8


def _turbojpeg_resized(data: bytes, spec: ResizeSpec) -> Image.Image | None:
    """The fast path of a YCbCr or grayscale JPEG: TurboJPEG's decode at M/8 (accurate
    DCT, smooth upsampling), resampled from the original's exact area in it; None when it
    does not apply (other colour spaces, a side under 8 pixels, anything TurboJPEG
    refuses or warns about), and the caller decodes with Pillow."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    # from 8 pixels up, each M gives another size: the decode below is at exactly M/8
    if colorspace not in ("YCbCr", "Gray") or min(width, height) < 8:
        return None
    size = target_size(spec, width, height)
    if size is None:
        return None
    m = eighths(width, height, size)
    reduced = (-(-width * m // 8), -(-height * m // 8))
    gray = colorspace == "Gray"
    try:
        pixels = simplejpeg.decode_jpeg(data, "GRAY" if gray else "RGB",
                                        min_width=reduced[0], min_height=reduced[1],
                                        min_factor=8 / m - 1e-9)
    except ValueError:
        return None
    if pixels.shape[:2] != reduced[::-1]:
        return None
    im = _pixels(Image.fromarray(pixels[..., 0] if gray else pixels), spec)
    return im.resize(size, FILTER, box=(0, 0, width * m / 8, height * m / 8))


def decode_resized(data: bytes, where: str, spec: ResizeSpec, fast: bool = True
                   ) -> Image.Image | None:
    """The resized pixels (fast: reduced JPEG decode first; else the reference path, a full
    decode with Pillow), or None when the image keeps its size."""
    if fast and not spec.full_decode and (im := _turbojpeg_resized(data, spec)) is not None:
        return im
    im = _open(data, where)
    try:
        size = target_size(spec, *im.size)
        if size is None:
            return None
        box = None
        if fast and not spec.full_decode and im.format in ("JPEG", "MPO"):
            want = (size[0] * DRAFT_MARGIN, size[1] * DRAFT_MARGIN)
            # the largest 1/2^k scale still >= want in both sides; the reduced image is
            # rounded up to whole pixels, so `box` is the original's exact area in it
            drafted = im.draft(im.mode, want)
            box = drafted[1] if drafted else None
        return _pixels(im, spec).resize(size, FILTER, box=box)
    except BadImageError:
        raise
    except Exception as e:
        raise BadImageError(f"{where}: cannot decode the image ({_why(e)})") from None


def resized_image(data: bytes, where: str, spec: ResizeSpec
                  ) -> tuple[bytes, int, int, str | None]:
    """(bytes to store, width, height, note or None) of one image in the variant.

    An image that keeps its size keeps its bytes when they are already what the variant
    stores (a JPEG in RGB or grayscale, and the variant is JPEG; gzip-wrapped ones are
    unwrapped); any other is decoded and encoded once at its size.
    """
    note = None
    if data[:2] == b"\x1f\x8b":
        data, note = _gunzip(data, where), "gzip"
    im = decode_resized(data, where, spec)
    if im is not None:  # resampled: say what the source was when not an RGB/gray JPEG
        frame = jpeg_frame(data)
        if frame is None or frame[2] not in (1, 3):
            reason = conversion_reason(probe(data, where))
            note = f"{note}+{reason}" if note and reason else (reason or note)
    else:
        if spec.image_format == "jpeg":
            kept, w, h, reason = jpeg_for_record(data, where)
            if kept is data:  # already a JPEG in RGB or grayscale: stored unchanged
                return data, w, h, note
            note = f"{note}+{reason}" if note else reason
        try:
            im = _pixels(_open(data, where), spec)
        except BadImageError:
            raise
        except Exception as e:
            raise BadImageError(f"{where}: cannot decode the image ({_why(e)})") from None
    return _encode(im, spec), im.size[0], im.size[1], note


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of two images of one size and mode, in dB (inf: equal)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def fast_vs_reference(data: bytes, where: str, spec: ResizeSpec) -> float | None:
    """PSNR of the fast path's pixels against the reference path's (full decode, same
    filter, same size); None when the image keeps its size (nothing is resampled)."""
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, where)
    fast = decode_resized(data, where, spec, fast=True)
    if fast is None:
        return None
    return psnr(fast, decode_resized(data, where, spec, fast=False))


StoredImage = Callable[[bytes, str], tuple[bytes, int, int, str | None]]


def image_encoder(resize: str | None) -> StoredImage:
    """What a shard stores of an image: `jpeg_for_record` (no resizing), or the variant's
    resized bytes for the options `ResizeSpec.text` wrote."""
    spec = from_text(resize)
    if spec is None:
        return jpeg_for_record
    return lambda data, where: resized_image(data, where, spec)
