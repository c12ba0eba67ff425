"""Image facts from the header, and the rare conversion to an RGB JPEG.

TensorFlow's reference converter decodes every image only to learn its size and
finds its 23 odd files by a list of names.  Here Pillow opens each image lazily
(header only) to get format, mode and size; bytes are kept unless the CONTENT is
not a JPEG that decodes to RGB or grayscale, and only those few files are decoded
and re-encoded (quality 100, as the reference).
"""

from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass

from PIL import Image

from imagenet_prep.errors import BadImageError

JPEG_FORMATS = ("JPEG", "MPO")  # Pillow calls a JPEG with an MPF (APP2) marker "MPO"
KEEP_MODES = ("RGB", "L")
QUALITY = 100
MAX_GUNZIP = 256 << 20  # a gzip-wrapped image larger than this is refused


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header says: Pillow's format name, mode and size in pixels."""

    format: str
    mode: str
    width: int
    height: int
    adobe_transform: int | None = None  # JPEG APP14: 0 plain, 1 YCbCr, 2 YCCK


def probe(data: bytes, where: str) -> ImageInfo:
    """Read the header only; raise BadImageError naming `where` if it is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / size warnings are not our business
            im = Image.open(io.BytesIO(data))
            info = ImageInfo(
                im.format or "?", im.mode, im.size[0], im.size[1],
                im.info.get("adobe_transform"),
            )
    except Exception as e:  # Pillow raises many kinds for garbage input
        raise BadImageError(f"{where}: not a readable image ({_why(e)})") from None
    if info.width <= 0 or info.height <= 0:
        raise BadImageError(f"{where}: image has no pixels ({info.width}x{info.height})")
    return info


def conversion_reason(info: ImageInfo) -> str | None:
    """None when the bytes can be stored as they are; else why they must be converted."""
    if info.format in JPEG_FORMATS:
        if info.mode in KEEP_MODES:
            return None
        if info.mode == "CMYK":
            return "ycck" if info.adobe_transform == 2 else "cmyk"
        return f"jpeg-{info.mode.lower()}"
    return info.format.lower()


def to_rgb_jpeg(data: bytes, where: str) -> bytes:
    """Decode any image Pillow reads and encode it as a baseline RGB JPEG (quality 100)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))  # the first frame of a multi-frame file
            im.load()
            if im.mode.startswith("I;16"):  # 16-bit grayscale: scale to 8 bits, not clip
                im = im.point(lambda v: v / 256).convert("L")
            out = io.BytesIO()
            # plain RGB JPEG, no colour profile or EXIF carried over from a CMYK original
            im.convert("RGB").save(out, "JPEG", quality=QUALITY, subsampling="4:2:0",
                                   optimize=False, icc_profile=None, exif=b"")
    except Exception as e:
        raise BadImageError(f"{where}: cannot decode the image ({_why(e)})") from None
    return out.getvalue()


def _gunzip(data: bytes, where: str) -> bytes:
    """Unwrap a gzip-compressed image (stb_image's author found such files in ImageNet)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, MAX_GUNZIP)
    except zlib.error as e:
        raise BadImageError(f"{where}: gzip-wrapped data is corrupt ({e})") from None
    if d.unconsumed_tail:
        raise BadImageError(f"{where}: gzip-wrapped image larger than {MAX_GUNZIP} bytes")
    if not d.eof:
        raise BadImageError(f"{where}: gzip-wrapped data is truncated")
    return out


def jpeg_for_record(data: bytes, where: str) -> tuple[bytes, int, int, str | None]:
    """(bytes to store, height, width, conversion reason or None) for one image.

    Kept bytes are returned unchanged (the same object); a conversion decodes once.
    """
    reason_prefix = ""
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, where)
        reason_prefix = "gzip+"
    info = probe(data, where)
    reason = conversion_reason(info)
    if reason is None:
        return data, info.height, info.width, (reason_prefix.rstrip("+") or None)
    out = to_rgb_jpeg(data, where)
    return out, info.height, info.width, reason_prefix + reason


def _why(e: Exception) -> str:
    """Pillow's message on one line, without the in-memory file's repr."""
    text = str(e).split("<_io.BytesIO")[0].strip()
    return (text.splitlines() or [""])[0] or type(e).__name__
