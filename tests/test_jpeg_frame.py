"""The fast JPEG header walk agrees with Pillow, and parts-based framing with joined framing."""

from __future__ import annotations

import io
import tarfile

from PIL import Image

from imagenet_prep.formats.images import conversion_reason, jpeg_frame, probe
from imagenet_prep.formats.tfrecord import frame, frame_parts


def _replica_images(archive) -> list[tuple[str, bytes]]:
    out = []
    with tarfile.open(archive) as outer:
        for m in outer:
            with tarfile.open(fileobj=outer.extractfile(m)) as inner:
                out += [(im.name, inner.extractfile(im).read()) for im in inner]
    return out


def test_frame_walk_agrees_with_pillow_on_every_replica_image(replicas):
    images = _replica_images(replicas["medium"] / "ILSVRC2012_img_train.tar")
    fast_kept = 0
    for name, data in images:
        info = probe(data, name)
        hdr = jpeg_frame(data)
        if info.format == "JPEG":
            assert hdr is not None, name
            assert hdr[:2] == (info.width, info.height), name
            assert {1: "L", 3: "RGB", 4: "CMYK"}[hdr[2]] == info.mode, name
        else:
            assert hdr is None, name  # the PNG under a .JPEG name goes to Pillow
        kept_fast = hdr is not None and hdr[2] in (1, 3)
        assert kept_fast == (conversion_reason(info) is None), name
        fast_kept += kept_fast
    assert fast_kept > len(images) - 10


def test_frame_walk_handles_progressive_exif_and_odd_input():
    im = Image.new("RGB", (37, 21), (10, 200, 30))
    for kwargs in ({"progressive": True}, {"exif": Image.Exif().tobytes()}, {}):
        buf = io.BytesIO()
        im.save(buf, "JPEG", **kwargs)
        assert jpeg_frame(buf.getvalue()) == (37, 21, 3)
    for junk in (b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00", b"GIF89a", b"\xff\xd8\xff\xda\x00\x08"):
        assert jpeg_frame(junk) is None


def test_frame_parts_equal_joined_frame():
    parts = [b"head", b"x" * 100_000, b"", b"tail"]
    assert b"".join(frame_parts(parts)) == frame(b"".join(parts))
