"""tf.train.Example encoding and TFRecord framing, without TensorFlow or protobuf.

An Example is three tiny protobuf messages; a hand encoder of ~50 lines is
simpler to ship than a generated module tied to a protobuf runtime version, and
writes the map entries sorted by key, so equal features give equal bytes (a map's
entry order carries no meaning; parsers, TensorFlow's included, accept any order;
protobuf's own serialisers do not promise one).  Framing per record: uint64
length, masked CRC32C of the length, data, masked CRC32C of the data (all
little-endian), with the CRC from google-crc32c (C, hardware-accelerated).

    message Example  { Features features = 1; }
    message Features { map<string, Feature> feature = 1; }
    message Feature  { oneof kind { BytesList bytes_list = 1;
                                    FloatList float_list = 2;
                                    Int64List int64_list = 3; } }
    message BytesList { repeated bytes value = 1; }
    message FloatList { repeated float value = 1 [packed = true]; }
    message Int64List { repeated int64 value = 1 [packed = true]; }

The reading side serves `check`, `report` and the tests: iter_records (every record,
both CRCs checked), record_spans (headers only, for DALI indexes), decode_example, and
for a fast pass over labels iter_heads + peek (a record's first KiB: its label and where
its image lies).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.storage import open_input

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


class RecordError(PrepError):
    """A TFRecord file is truncated or a CRC does not match."""


# --- protobuf wire format ---------------------------------------------------------------
# Each helper joins its parts once: the image bytes are copied as few times as possible.

_SMALL = tuple(bytes((i,)) for i in range(128))
_TAG = {1: b"\x0a", 2: b"\x12", 3: b"\x1a"}  # fields 1..3, wire type 2 (length-delimited)


def varint(n: int) -> bytes:
    """A protobuf varint (int64 negatives as ten bytes)."""
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        n &= (1 << 64) - 1  # int64 negatives are ten-byte two's complement varints
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return b"".join((_TAG[number], varint(len(payload)), payload))


def bytes_feature(values: Sequence[bytes]) -> bytes:
    assert not isinstance(values, bytes), "pass a list of byte strings"
    if len(values) == 1:  # the common case, one join: tag, length, tag, length, value
        v = values[0]
        head = varint(len(v))
        return b"".join((b"\x0a", varint(1 + len(head) + len(v)), b"\x0a", head, v))
    return _field(1, b"".join(_field(1, v) for v in values))


def float_feature(values: Sequence[float]) -> bytes:
    packed = struct.pack(f"<{len(values)}f", *values)
    return _field(2, _field(1, packed) if values else b"")


def int64_feature(values: Sequence[int]) -> bytes:
    packed = b"".join(varint(int(v)) for v in values)
    return _field(3, _field(1, packed) if values else b"")


_KEYS: dict[str, bytes] = {}


def bytes_feature_parts(value: bytes) -> tuple[bytes, bytes]:
    """bytes_feature([value]) as (head, value), so a large value is never copied."""
    head = varint(len(value))
    return b"".join((b"\x0a", varint(1 + len(head) + len(value)), b"\x0a", head)), value


def entry_head(key: str, size: int) -> bytes:
    """An entry of the Example's feature map up to its encoded Feature (of `size` bytes).

    An Example is example_head(total) and then its entries in key order; a writer that
    knows its keys' order builds the entries itself and skips the sorting and the
    dict of encode_example_parts (the record path of `tfrecord`).
    """
    kf = _KEYS.get(key)
    if kf is None:
        kf = _KEYS[key] = _field(1, key.encode())
    vlen = varint(size)
    return b"".join((b"\x0a", varint(len(kf) + 1 + len(vlen) + size), kf, b"\x12", vlen))


def feature_entry(key: str, feature: bytes) -> bytes:
    """One whole entry of the feature map (see entry_head)."""
    return entry_head(key, len(feature)) + feature


def example_head(size: int) -> bytes:
    """What precedes an Example's entries (of `size` bytes in all)."""
    return b"\x0a" + varint(size)


def encode_example_parts(features: Mapping[str, bytes | tuple[bytes, ...]]) -> list[bytes]:
    """An Example as a list of byte strings whose concatenation is the serialised message.

    A feature may be given as parts (see bytes_feature_parts): the image bytes then
    go to the file by one writev, without being copied into a joined record.
    Keys are written in sorted order, so equal features give equal bytes.
    """
    parts: list[bytes] = []
    for key in sorted(features):
        value = features[key]
        pieces = value if isinstance(value, tuple) else (value,)
        parts += (entry_head(key, sum(map(len, pieces))), *pieces)
    return [example_head(sum(map(len, parts))), *parts]


def encode_example(features: Mapping[str, bytes | tuple[bytes, ...]]) -> bytes:
    """Serialise an Example from key -> encoded Feature (made by the *_feature helpers)."""
    return b"".join(encode_example_parts(features))


# --- framing ---------------------------------------------------------------------------

def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C: rotate right by 15 bits, add a constant."""
    return _mask(google_crc32c.value(data))


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def frame_parts(parts: Sequence[bytes]) -> list[bytes]:
    """One TFRecord (header, data, footer) as parts, the data CRC computed across them."""
    length = struct.pack("<Q", sum(map(len, parts)))
    crc = 0
    for part in parts:
        crc = google_crc32c.extend(crc, part)
    return [length + struct.pack("<I", masked_crc(length)), *parts,
            struct.pack("<I", _mask(crc))]


def frame(data: bytes) -> bytes:
    """One complete TFRecord: header, data, footer."""
    return b"".join(frame_parts([data]))


def iter_records(path: Path, *, verify: bool = True, name: object = None
                 ) -> Iterator[tuple[int, bytes]]:
    """Yield (byte offset, data) of every record in a TFRecord file, checking both CRCs
    (errors name `name`, when given: the object that `path` is a local copy of)."""
    where = path if name is None else name
    with open_input(path) as f:
        offset = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise RecordError(f"{where}: truncated record header at byte {offset}")
            length_bytes, crc = head[:8], struct.unpack("<I", head[8:])[0]
            if verify and masked_crc(length_bytes) != crc:
                raise RecordError(f"{where}: length CRC mismatch at byte {offset}")
            (length,) = struct.unpack("<Q", length_bytes)
            data = f.read(length)
            foot = f.read(4)
            if len(data) < length or len(foot) < 4:
                raise RecordError(f"{where}: truncated record at byte {offset}")
            if verify and masked_crc(data) != struct.unpack("<I", foot)[0]:
                raise RecordError(f"{where}: data CRC mismatch in the record at byte {offset}")
            yield offset, data
            offset += 16 + length


def record_spans(path: Path) -> list[tuple[int, int]]:
    """(offset, total size) of every record, reading only the headers (for DALI indexes)."""
    spans = []
    size = path.stat().st_size
    with open_input(path) as f:  # a shard in a bucket too (its index deleted alone)
        offset = 0
        while offset < size:
            head = f.read(12)
            if len(head) < 12:
                raise RecordError(f"{path}: truncated record header at byte {offset}")
            (length,) = struct.unpack("<Q", head[:8])
            if masked_crc(head[:8]) != struct.unpack("<I", head[8:])[0]:
                raise RecordError(f"{path}: length CRC mismatch at byte {offset}")
            if offset + 16 + length > size:
                raise RecordError(f"{path}: truncated record at byte {offset}")
            spans.append((offset, 16 + length))
            offset += 16 + length
            f.seek(offset)
    return spans


# --- reading: one varint reader for the decoder and the peek -----------------------------

def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it); IndexError past the end of `buf` (the callers say what
    was truncated)."""
    b = buf[pos]
    if b < 0x80:  # the common case: tags and short lengths are one byte
        return b, pos + 1
    shift, value = 7, b & 0x7F
    while True:
        b = buf[pos + shift // 7]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos + shift // 7 + 1
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


# --- minimal decoder (for check, report and tests) ---------------------------------------

def _fields(buf: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """(field number, wire type, value) of a message: a view for wire types 1, 2, 5."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
            continue
        if wire == 2:
            n, pos = _read_varint(buf, pos)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos + n > len(buf):
            raise ValueError("truncated field")
        yield number, wire, buf[pos:pos + n]
        pos += n


def _view(v: memoryview | int) -> memoryview:
    if isinstance(v, int):
        raise ValueError("expected a length-delimited field")
    return v


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _decode_feature(buf: memoryview) -> list:
    out: list = []
    for kind, _, payload in _fields(buf):
        for _, _, v in _fields(_view(payload)):
            if kind == 1:
                out.append(bytes(_view(v)))
            elif kind == 2:  # packed (wire type 2) or one fixed32 (5)
                raw = _view(v)
                out.extend(struct.unpack(f"<{len(raw) // 4}f", raw))
            elif kind == 3 and isinstance(v, int):
                out.append(_signed(v))
            elif kind == 3:
                p = 0
                while p < len(v):
                    x, p = _read_varint(v, p)
                    out.append(_signed(x))
    return out


def decode_example(data: bytes) -> dict[str, list]:
    """key -> list of values (bytes, floats or ints); raises ValueError on a malformed message."""
    try:
        return _decode_example(data)
    except IndexError:  # a varint runs past the end of its message
        raise ValueError("truncated varint") from None


def _decode_example(data: bytes) -> dict[str, list]:
    out: dict[str, list] = {}
    for number, _, features in _fields(memoryview(data)):
        if number != 1:
            continue
        for _, _, entry in _fields(_view(features)):
            key, value = "", memoryview(b"")
            for n, _, v in _fields(_view(entry)):
                if n == 1:
                    key = bytes(_view(v)).decode()
                elif n == 2:
                    value = _view(v)
            out[key] = _decode_feature(value)
    return out


# --- peeking: a record's label and image from its first bytes (for a fast pass) ----------

HEADER_BYTES = 12  # a record's uint64 length and the length's masked CRC, before its data
FOOTER_BYTES = 4  # the data's masked CRC, after it
_LENGTH = struct.Struct("<Q")
_LABEL_KEY = b"\x0a\x11image/class/label"  # a map entry's key field: tag, length, the key
_IMAGE_KEY = b"\x0a\x0dimage/encoded"
_NAME_KEY = b"\x0a\x0eimage/filename"


class TruncatedRecord(ValueError):
    """A file ends inside the record starting at `offset`; `part` is "header" or "record"."""

    def __init__(self, offset: int, part: str) -> None:
        super().__init__(f"truncated {part} at byte {offset}")
        self.offset, self.part = offset, part


def iter_heads(fd: int, size: int, peek_bytes: int) -> Iterator[tuple[int, int, bytes]]:
    """(offset, data length, the data's first `peek_bytes` bytes) of every record of an open
    TFRecord file of `size` bytes: one positioned read per record, no CRC checked.
    Raises TruncatedRecord where the file ends inside a record."""
    offset = 0
    while offset < size:
        buf = os.pread(fd, HEADER_BYTES + peek_bytes, offset)
        if len(buf) < HEADER_BYTES:
            raise TruncatedRecord(offset, "header")
        (length,) = _LENGTH.unpack_from(buf)
        if offset + HEADER_BYTES + length + FOOTER_BYTES > size:
            raise TruncatedRecord(offset, "record")
        yield offset, length, buf[HEADER_BYTES:HEADER_BYTES + length]
        offset += HEADER_BYTES + length + FOOTER_BYTES


def read_example(fd: int, offset: int, length: int) -> dict[str, list]:
    """decode_example of the record at `offset` whose data is `length` bytes (no CRC checked)."""
    return decode_example(os.pread(fd, length, offset + HEADER_BYTES))


@dataclass(frozen=True, slots=True)
class Peek:
    """What a record's first bytes say: its label, where its image is, where the rest starts.

    Positions count from the start of the record's data (add HEADER_BYTES for the file)."""

    label: int | None
    image_start: int | None = None
    image_size: int | None = None
    rest_start: int | None = None  # the entries after image/encoded (filename, size, boxes)


def peek(buf: bytes) -> Peek:
    """The label and where the image is, from `buf` (the start of an Example).

    Our writer's sorted keys put `image/class/label` and the start of `image/encoded` in
    the first KiB; records whose keys come in another order are walked entry by entry,
    and a None label or image_start means: decode the record whole.  ValueError when
    `buf` is not the start of an Example."""
    try:
        return _peek(buf)
    except IndexError:
        raise ValueError("truncated message") from None


def peek_filename(buf: bytes) -> bytes | None:
    """The image/filename value in `buf` (our writer puts it right after the image, at
    Peek.rest_start), or None when it is not wholly there."""
    k = buf.find(_NAME_KEY)
    if k < 0:
        return None
    try:
        p, n, _ = _bytes_value(buf, k + len(_NAME_KEY))
    except (ValueError, IndexError):
        return None
    return buf[p:p + n] if p + n <= len(buf) else None


def _expect(buf: bytes, pos: int, tag: int) -> tuple[int, int]:
    """Read a field tag that must be `tag`, then its length; returns (length, position)."""
    got, pos = _read_varint(buf, pos)
    if got != tag:
        raise ValueError(f"unexpected field tag {got:#x}")
    return _read_varint(buf, pos)


def _bytes_value(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(start, size) of the single value of the BytesList Feature at `pos` (just after its
    key), and where that Feature ends."""
    flen, p = _expect(buf, pos, 0x12)  # Feature
    end = p + flen
    _, p = _expect(buf, p, 0x0A)  # .bytes_list
    n, p = _expect(buf, p, 0x0A)  # its single value
    return p, n, end


def _peek(buf: bytes) -> Peek:
    i = buf.find(_IMAGE_KEY)
    j = buf.find(_LABEL_KEY, 0, max(i, 0))
    if i >= 0 and j >= 0:  # our writer: both keys in the first bytes, the label first
        p, n, end = _bytes_value(buf, i + len(_IMAGE_KEY))  # the Feature is last in its entry
        return Peek(_int64(buf, j + len(_LABEL_KEY)), p, n, end)
    return _walk(buf)


def _walk(buf: bytes) -> Peek:
    """The general case: visit the entries one by one (any key order)."""
    label = None
    _, pos = _expect(buf, 0, 0x0A)  # Example.features
    while pos < len(buf):
        size, body = _expect(buf, pos, 0x0A)  # one map entry: key (1), Feature (2)
        end = body + size
        klen, p = _expect(buf, body, 0x0A)
        key = buf[p:p + klen]
        if key == b"image/encoded":
            p, n, _ = _bytes_value(buf, p + klen)
            return Peek(label, p, n, end)
        if end > len(buf):
            break
        if key == b"image/class/label":
            label = _int64(buf, p + klen)
        pos = end
    return Peek(label)


def _int64(buf: bytes, pos: int) -> int:
    """The first value of a Feature holding an Int64List (packed or not)."""
    _, pos = _expect(buf, pos, 0x12)  # Feature
    _, pos = _expect(buf, pos, 0x1A)  # .int64_list
    tag, pos = _read_varint(buf, pos)
    if tag == 0x0A:  # packed
        _, pos = _read_varint(buf, pos)
    elif tag != 0x08:
        raise ValueError(f"unexpected field tag {tag:#x}")
    value, _ = _read_varint(buf, pos)
    return _signed(value)


def idx_text(spans: list[tuple[int, int]]) -> str:
    """DALI's index: one `offset size` line per record (as its tfrecord2idx writes)."""
    return "".join(f"{o} {n}\n" for o, n in spans)
