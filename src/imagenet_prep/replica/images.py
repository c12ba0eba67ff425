"""Synthetic photographs for the replica archives, one pure function per image.

Each image is a function of (seed, member name, size, kind) only, so a process
pool can render them in any order and the archives stay byte-identical whatever
the worker count.  Content is smooth colour fields plus luma noise from PCG64:
enough texture that a 500x375 JPEG averages about 110 KB, like real ImageNet.

Kinds mirror the real archives' odd files (docs/quirks.md): `rgb` (ordinary
baseline JPEG), `gray` (1-channel JPEG), `cmyk` (4-channel JPEG, Adobe transform
0, as Photoshop writes), `ycck` (4-channel JPEG, Adobe transform 2) and `png`
(a PNG that will be stored under a .JPEG name).
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import signal
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
QUALITIES = (85, 90, 92, 95)  # Flickr-era cameras and editors; averages ~110 KB below
NOISE_SPAN = (52, 130)  # fine luma noise span (grey levels), drawn per image


class ImageTask(NamedTuple):
    """One image to render: its member name (also its random key), pixel size and kind."""

    name: str
    width: int
    height: int
    kind: str = "rgb"


def image_rng(seed: int, *key: str) -> np.random.Generator:
    """A PCG64 generator keyed by the seed and text labels, stable across runs and platforms."""
    words = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
             for k in key]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *words])))


def _pixels(rng: np.random.Generator, width: int, height: int, gray: bool) -> Image.Image:
    """Smooth colour field from a coarse random grid, plus fine and half-resolution luma noise.

    Built from Pillow's integer operations (point tables, nearest-neighbour scaling,
    add_modulo on ranges that cannot overflow): about 1 ms at 500x375.
    """
    mode = "L" if gray else "RGB"
    channels = len(mode)
    grid_w, grid_h = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    fine_span = int(rng.integers(*NOISE_SPAN))
    coarse_span = fine_span // 2
    base_span = 255 - fine_span - coarse_span
    small = ((width + 3) // 4, (height + 3) // 4)
    grid = Image.frombytes(mode, (grid_w, grid_h), rng.bytes(grid_w * grid_h * channels))
    base = grid.resize(small, Image.Resampling.BICUBIC).point(_scale(base_span) * channels)
    base = base.resize((small[0] * 4, small[1] * 4), Image.Resampling.NEAREST)
    half = ((width + 1) // 2, (height + 1) // 2)
    coarse = Image.frombytes("L", half, rng.bytes(half[0] * half[1])).point(_scale(coarse_span))
    coarse = coarse.resize((half[0] * 2, half[1] * 2), Image.Resampling.NEAREST)
    fine = Image.frombytes("L", (width, height), rng.bytes(width * height)).point(_scale(fine_span))
    box = (0, 0, width, height)
    noise = ImageChops.add_modulo(fine, coarse.crop(box))
    if not gray:
        noise = Image.merge(mode, (noise,) * channels)
    return ImageChops.add_modulo(base.crop(box), noise)


def _scale(span: int) -> list[int]:
    """Point table mapping 0..255 onto 0..span."""
    return [v * span // 255 for v in range(256)]


def _cmyk(rgb: np.ndarray) -> np.ndarray:
    """RGB -> CMYK (Pillow's convention, 0 = no ink) with half grey-component replacement."""
    cmy = 255 - rgb.astype(np.int16)
    k = cmy.min(axis=2, keepdims=True) // 2
    return np.concatenate([cmy - k, k], axis=2).astype(np.uint8)


def _cmyk_image(array: np.ndarray) -> Image.Image:
    height, width = array.shape[:2]
    return Image.frombytes("CMYK", (width, height), np.ascontiguousarray(array).tobytes())


def _ycck_payload(cmyk: np.ndarray) -> np.ndarray:
    """The 4 channels to hand Pillow so that, once stored and re-flagged, the file is YCCK.

    Pillow stores CMYK inverted (Adobe style: file = 255 - value) and libjpeg decodes
    YCCK as C = 255 - R(Y, Cb, Cr), K unchanged.  So for a decoded value P the file
    must hold Y/Cb/Cr of (P_c, P_m, P_y) taken as RGB, and 255 - P_k; Pillow is given
    255 - that.
    """
    p = cmyk.astype(np.float32)
    r, g, b = p[..., 0], p[..., 1], p[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168735892 * r - 0.331264108 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418687589 * g - 0.081312411 * b + 128
    stored = np.stack([y, cb, cr, 255 - p[..., 3]], axis=2)
    return (255 - np.clip(np.rint(stored), 0, 255)).astype(np.uint8)


def _segments(data: bytes | bytearray) -> list[tuple[int, int, int]]:
    """(marker, offset of the marker, segment length) for each JPEG header segment up to SOS."""
    out = []
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2:i + 4], "big")
        out.append((marker, i, length))
        if marker == 0xDA:
            break
        i += 2 + length
    return out


def flag_ycck(jpeg: bytes) -> bytes:
    """Turn Pillow's 4-channel JPEG into a YCCK one: Adobe transform 2, component ids 1..4.

    libjpeg chooses CMYK or YCCK for a 4-component file from the Adobe APP14
    transform byte alone; the ids are set as libjpeg itself writes them for YCCK.
    """
    data = bytearray(jpeg)
    seen_adobe = False
    for marker, at, length in _segments(data):
        body = at + 4
        if marker == 0xEE and data[body:body + 5] == b"Adobe":
            data[at + 2 + length - 1] = 2
            seen_adobe = True
        elif marker in (0xC0, 0xC1, 0xC2):
            count = data[body + 5]
            for c in range(count):
                data[body + 6 + 3 * c] = c + 1
        elif marker == 0xDA:
            count = data[body]
            for c in range(count):
                data[body + 1 + 2 * c] = c + 1
    if not seen_adobe:
        raise ValueError("Pillow wrote a 4-channel JPEG without an Adobe marker")
    return bytes(data)


def render(seed: int, task: ImageTask) -> bytes:
    """The encoded bytes of one image (JPEG, or PNG for kind `png`)."""
    rng = image_rng(seed, "image", task.name)
    quality = int(rng.choice(QUALITIES))
    pixels = _pixels(rng, task.width, task.height, gray=task.kind == "gray")
    buf = io.BytesIO()
    if task.kind in ("rgb", "gray"):
        pixels.save(buf, "JPEG", quality=quality)
    elif task.kind == "cmyk":
        _cmyk_image(_cmyk(np.asarray(pixels))).save(buf, "JPEG", quality=quality)
    elif task.kind == "ycck":
        _cmyk_image(_ycck_payload(_cmyk(np.asarray(pixels)))).save(buf, "JPEG", quality=quality)
        return flag_ycck(buf.getvalue())
    elif task.kind == "png":
        pixels.save(buf, "PNG", compress_level=6)
    else:
        raise ValueError(f"unknown image kind {task.kind!r}")
    return buf.getvalue()


def worker_init() -> None:
    """Set up a pool worker: leave Ctrl-C to the parent; keep freed image buffers for reuse.

    Each image allocates a few MB that glibc would otherwise return to the OS and
    fault back in (about 250 page faults, a quarter of the render time).  Raising
    the mmap and trim thresholds keeps them in the heap.  A no-op off glibc.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 128 << 20)
    except (OSError, AttributeError):
        pass


def render_batch(seed: int, tasks: list[ImageTask]) -> list[bytes]:
    """Render several images in one call: fewer round trips to a worker process."""
    return [render(seed, t) for t in tasks]


def render_photo(seed: int, name: str, width: int, height: int) -> bytes:
    """A photo-like RGB JPEG (benchmarks of resizing; the replica's archives never use it).

    The default images are smooth fields under white luma noise, whose energy sits at the
    highest frequencies, where a reduced JPEG decode and a full one differ most; photos
    have a falling spectrum.  Here: seven octaves of colour noise with amplitude falling
    by 0.8 an octave, a dozen flat shapes with sharp edges, a slight blur (optics) and
    mild sensor noise.  About 45 ms and 75 KB at 500x375.
    """
    rng = image_rng(seed, "photo", name)
    acc = np.zeros((height, width, 3), np.float32)
    amp = 60.0
    for k in range(7, 0, -1):  # coarse to 2-pixel detail
        gw, gh = max(2, width >> k), max(2, height >> k)
        grid = Image.fromarray(rng.integers(0, 256, (gh, gw, 3), dtype=np.uint8))
        layer = np.asarray(grid.resize((width, height), Image.Resampling.BICUBIC), np.float32)
        acc += (layer - 128) * (amp / 128)
        amp *= 0.8
    img = Image.fromarray(np.clip(acc + 128, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(10, max(11, width // 2)))
        y1 = y0 + int(rng.integers(10, max(11, height // 2)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    grain = rng.normal(0, 6.0, (height, width, 1)).astype(np.float32)
    pixels = np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=int(rng.choice(QUALITIES)))
    return buf.getvalue()
