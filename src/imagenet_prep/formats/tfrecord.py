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
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import google_crc32c

from imagenet_prep.errors import PrepError

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


def iter_records(path: Path, *, verify: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yield (byte offset, data) of every record in a TFRecord file, checking both CRCs."""
    with open(path, "rb") as f:
        offset = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise RecordError(f"{path}: truncated record header at byte {offset}")
            length_bytes, crc = head[:8], struct.unpack("<I", head[8:])[0]
            if verify and masked_crc(length_bytes) != crc:
                raise RecordError(f"{path}: length CRC mismatch at byte {offset}")
            (length,) = struct.unpack("<Q", length_bytes)
            data = f.read(length)
            foot = f.read(4)
            if len(data) < length or len(foot) < 4:
                raise RecordError(f"{path}: truncated record at byte {offset}")
            if verify and masked_crc(data) != struct.unpack("<I", foot)[0]:
                raise RecordError(f"{path}: data CRC mismatch in the record at byte {offset}")
            yield offset, data
            offset += 16 + length


def record_spans(path: Path) -> list[tuple[int, int]]:
    """(offset, total size) of every record, reading only the headers (for DALI indexes)."""
    spans = []
    size = path.stat().st_size
    with open(path, "rb") as f:
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


# --- minimal decoder (for check and tests) ---------------------------------------------

def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


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


def idx_text(spans: list[tuple[int, int]]) -> str:
    """DALI's index: one `offset size` line per record (as its tfrecord2idx writes)."""
    return "".join(f"{o} {n}\n" for o, n in spans)
