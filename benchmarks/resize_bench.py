"""Resized variants (issue 16): our resize against a straightforward Pillow pipeline.

    python benchmarks/run.py --resize [--resize-images N] [--repeat N]

Both contenders run in this one process on one core, on the same images in memory
(crops of real photographs, `real_photos.py`, at quality 90 and at quality 98, which
comes close to ImageNet's ~110 KB an image; photo-like 500x375 JPEGs from
replica/images.py `render_photo`; the replica's default noise-textured ones for
contrast; and 1200x900 photo-like ones for `max=512`, which leaves 500x375 images as
they are), alternating A B A B with the median of --repeat runs, so the ratio is per
core and free of I/O:

- ours: `formats.resize.resized_image`, what every variant output stores (reduced
  JPEG decode when the target allows, one Lanczos resample, one encode; an image
  already small enough for short/max keeps its bytes);
- baseline: open, full decode, convert to RGB, resize to the same size with the same
  filter, save as JPEG at the same quality.

Also: mean PSNR of our fast path against the full-decode path, the bytes stored per
input byte (the disk size of each variant on the full dataset is the official train
and val archives times that ratio), and hours for ImageNet's 1,331,167 train+val
images on one core (divide by the cores used: the work is independent per image).
"""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from PIL import Image
from real_photos import real_photos

from imagenet_prep.formats import resize
from imagenet_prep.replica.images import ImageTask, render, render_photo
from imagenet_prep.sources.archives import OFFICIAL, TRAIN, VAL

RECIPES = (("short=256", None, None), ("short=160", 1.8, None), ("max=512", None, 90),
           ("box=64", 3.0, None))
SHRINKING = tuple(r for r in RECIPES if r[0] != "max=512")  # 500x375 keeps its bytes
REAL_QUALITIES = (90, 98)
LARGE = (("max=512", None, 90),)  # 1200x900: decoded at 1/2 (600x450), then resampled
FULL_IMAGES = 1_331_167
FULL_BYTES = OFFICIAL[TRAIN].size + OFFICIAL[VAL].size  # the images, as archived
PSNR_TARGET = 40.0


def baseline(data: bytes, spec: resize.ResizeSpec) -> bytes:
    """The straightforward pipeline: full decode, RGB, same size and filter, save."""
    im = Image.open(io.BytesIO(data))
    im = im.convert("RGB")
    size = resize.target_size(spec, *im.size) or im.size
    im = im.resize(size, resize.FILTER)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=spec.quality)
    return out.getvalue()


def ours(data: bytes, spec: resize.ResizeSpec) -> bytes:
    return resize.resized_image(data, "bench", spec)[0]


def _time(fn: Callable[[bytes, resize.ResizeSpec], bytes], images: list[bytes],
          spec: resize.ResizeSpec) -> tuple[float, int]:
    t0 = time.process_time()  # this process's CPU: per core, whatever else the VM runs
    out = sum(len(fn(d, spec)) for d in images)
    return time.process_time() - t0, out


def images_of(kind: str, count: int) -> list[bytes] | None:
    """The benchmark's images of one kind (None: real photos without scikit-image)."""
    if kind.startswith("real q"):
        return real_photos(count, int(kind.removeprefix("real q")))
    if kind == "large":  # ImageNet's larger photos: where max=512 resizes at all
        return [render_photo(0, f"large_{i}", 1200, 900) for i in range(count)]
    if kind == "photo":
        return [render_photo(0, f"photo_{i}", 500, 375) for i in range(count)]
    return [render(0, ImageTask(f"n00000000_{i}.JPEG", 500, 375)) for i in range(count)]


def run_resize(count: int = 200, repeat: int = 3) -> dict[str, Any]:
    """The table rows (printed) and every figure, as a dict for the results JSON."""
    rows: list[dict[str, Any]] = []
    kinds = [(f"real q{q}", SHRINKING) for q in REAL_QUALITIES] + \
        [("photo", RECIPES), ("noise", RECIPES), ("large", LARGE)]
    missing = []
    for kind, recipes in kinds:
        images = images_of(kind, count if kind != "large" else max(1, count // 4))
        if images is None:
            missing.append(kind)
            continue
        count_here = len(images)
        size_in = sum(map(len, images))
        for what, target, quality in recipes:
            spec = resize.parse(what, quality)
            a: list[float] = []
            b: list[float] = []
            out_bytes = 0
            for _ in range(repeat):
                t, out_bytes = _time(ours, images, spec)
                a.append(t)
                b.append(_time(baseline, images, spec)[0])
            psnrs = [p for d in images if (p := resize.fast_vs_reference(d, "b", spec))
                     is not None and math.isfinite(p)]
            ours_rate = count_here / statistics.median(a)
            base_rate = count_here / statistics.median(b)
            ratio = out_bytes / size_in
            rows.append({
                "images": kind, "recipe": f"{what} q{spec.quality}", "target": target,
                "ours_per_s": round(ours_rate, 1), "baseline_per_s": round(base_rate, 1),
                "speed": round(ours_rate / base_rate, 2),
                "psnr_mean_db": round(statistics.mean(psnrs), 2) if psnrs else None,
                "reduced_share": round(len(psnrs) / count_here, 2),
                "bytes_ratio": round(ratio, 4),
                "mean_in_kb": round(size_in / count_here / 1e3, 1),
                "full_hours_one_core": round(FULL_IMAGES / ours_rate / 3600, 2),
                "full_gb": round(FULL_BYTES * ratio / 1e9, 1),
            })
    print("\n".join(table(rows)))
    if missing:
        print(f"left out: {', '.join(missing)} (needs scikit-image: pip install -e '.[bench]')")
    return {"resize": rows, "left_out": missing}


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "resize, images/s per core (one process; same images, same run)",
             "| images | recipe | ours | straightforward Pillow | speed | target | mean PSNR, "
             "fast vs full decode | 1.33 M images, one core | full dataset on disk |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = "" if r["target"] is None else \
            f"≥ {r['target']}x: {'pass' if r['speed'] >= r['target'] else 'miss'}"
        psnr = "identical (no reduced decode)" if r["psnr_mean_db"] is None else \
            f"{r['psnr_mean_db']:.1f} dB ({r['reduced_share']:.0%} reduced)" + \
            ("" if r["psnr_mean_db"] >= PSNR_TARGET else ": below 40")
        lines.append(
            f"| {r['images']} ({r['mean_in_kb']:.0f} KB) | {r['recipe']} | "
            f"{r['ours_per_s']:.0f} | {r['baseline_per_s']:.0f} | {r['speed']:.2f}x | "
            f"{verdict} | {psnr} | {r['full_hours_one_core']:.1f} h | {r['full_gb']:.1f} GB |")
    return lines
