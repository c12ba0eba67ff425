"""Small JPEG thumbnails as data URIs, and image facts read from the header only.

A thumbnail decodes one image at reduced scale (JPEG draft mode), so a page of a
few hundred of them costs well under a second; CMYK, PNG, grayscale and 16-bit
images all come out as RGB.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass

from PIL import Image

from imagenet_prep.errors import BadImageError
from imagenet_prep.formats.images import conversion_reason, jpeg_for_record, jpeg_frame, probe

THUMB_PX = 96
THUMB_QUALITY = 70
HEAD_BYTES = 64 << 10  # the start-of-frame marker sits well inside this for camera JPEGs


@dataclass(frozen=True, slots=True)
class Facts:
    """What the header says: pixel size, and why the TFRecord writer would convert it."""

    width: int
    height: int
    reason: str | None = None  # None: a baseline RGB or grayscale JPEG, stored as it is


def facts_from_head(head: bytes) -> Facts | None:
    """Facts from the first bytes of a plain RGB or grayscale JPEG, else None (read it all)."""
    frame = jpeg_frame(head)
    if frame is None or frame[2] not in (1, 3) or frame[0] <= 0 or frame[1] <= 0:
        return None
    return Facts(frame[0], frame[1])


def facts(data: bytes, where: str) -> Facts:
    """Facts from a whole file; raises BadImageError naming `where` when it is not an image.

    Only the rare files that are not plain JPEGs get past the header: a gzip-wrapped
    image is unwrapped (and converted) by the same code the TFRecord writer uses.
    """
    quick = facts_from_head(data)
    if quick is not None:
        return quick
    if data[:2] == b"\x1f\x8b":
        _, width, height, reason = jpeg_for_record(data, where)
        return Facts(width, height, reason)
    info = probe(data, where)
    return Facts(info.width, info.height, conversion_reason(info))


def thumbnail(data: bytes, where: str, px: int = THUMB_PX) -> bytes:
    """A JPEG at most `px` pixels on its longer side; raises BadImageError if it cannot decode."""
    if data[:2] == b"\x1f\x8b":
        data = jpeg_for_record(data, where)[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            im.draft("RGB", (px, px))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            if im.mode.startswith("I;16") or im.mode == "I":
                im = im.point(lambda v: v / 256).convert("L")
            im = im.convert("RGB")
            im.thumbnail((px, px), Image.Resampling.BILINEAR)
            out = io.BytesIO()
            im.save(out, "JPEG", quality=THUMB_QUALITY, optimize=True)
    except Exception as e:  # Pillow raises many kinds for damaged input
        raise BadImageError(f"{where}: cannot decode the image ({e})") from None
    return out.getvalue()


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
