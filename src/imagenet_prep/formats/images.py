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
    """(bytes to store, width, height, conversion reason or None) for one image.

    Kept bytes are returned unchanged (the same object); a conversion decodes once.
    """
    reason_prefix = ""
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, where)
        reason_prefix = "gzip+"
    frame = jpeg_frame(data)
    if frame is not None and frame[2] in (1, 3) and frame[0] > 0 and frame[1] > 0:
        # grayscale or YCbCr/RGB JPEG: what Pillow would call mode L or RGB, kept as is
        return data, frame[0], frame[1], (reason_prefix.rstrip("+") or None)
    info = probe(data, where)
    reason = conversion_reason(info)
    if reason is None:
        return data, info.width, info.height, (reason_prefix.rstrip("+") or None)
    out = to_rgb_jpeg(data, where)
    return out, info.width, info.height, reason_prefix + reason


_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from a JPEG's start-of-frame marker, else None.

    Walking the marker segments costs a few microseconds against ~100 for Pillow's
    open, and this runs once per image.  Anything unusual returns None and is left
    to Pillow.
    """
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker == 0xDA or marker == 0xD9:  # scan or end before any frame header
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF:
            if length < 8 or pos + 10 > end:
                return None
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return width, height, data[pos + 9]
        if length < 2:
            return None
        pos += 2 + length
    return None


def _why(e: Exception) -> str:
    """Pillow's message on one line, without the in-memory file's repr."""
    text = str(e).split("<_io.BytesIO")[0].strip()
    return (text.splitlines() or [""])[0] or type(e).__name__


def stored_image_problems(where: str, image: bytes, width: int, height: int, said: str,
                          formats: tuple[str, ...] = JPEG_FORMATS) -> list[str]:
    """What is wrong with an image a shard stores (empty: a JPEG (or one of `formats`) in
    RGB or grayscale that decodes fully at the `width` x `height` its metadata (`said`)
    gives)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(image))
            im.load()
    except Exception as e:
        return [f"{where}: image does not decode ({e})"]
    if im.format not in formats:
        return [f"{where}: image is {im.format}, not {formats[0]}"]
    if im.mode not in ("RGB", "L"):
        return [f"{where}: image is {im.mode}, not RGB or grayscale"]
    if im.size != (width, height):
        return [f"{where}: image is {im.size[0]}x{im.size[1]}, {said} says {width}x{height}"]
    return []
