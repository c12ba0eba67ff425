"""The hand-written Example encoder and TFRecord framing against TensorFlow's own reader."""

from __future__ import annotations

import struct

import pytest

from imagenet_prep.formats.tfrecord import (
    RecordError,
    bytes_feature,
    decode_example,
    encode_example,
    float_feature,
    frame,
    int64_feature,
    iter_records,
    masked_crc,
    record_spans,
)

FEATURES = {
    "image/encoded": ("bytes", [b"\xff\xd8" + bytes(range(256)) * 40]),
    "image/format": ("bytes", [b"JPEG"]),
    "empty/bytes": ("bytes", []),
    "two/bytes": ("bytes", [b"", b"abc"]),
    "image/height": ("int64", [375]),
    "ints": ("int64", [0, 1, 127, 128, 300, 2**31, 2**40, -1, -(2**63), 2**63 - 1]),
    "empty/ints": ("int64", []),
    "boxes": ("float", [0.0, 0.1234, 1.0, 0.5, -2.5]),
    "empty/floats": ("float", []),
}


def _ours(features=FEATURES) -> bytes:
    make = {"bytes": bytes_feature, "int64": int64_feature, "float": float_feature}
    return encode_example({k: make[kind](v) for k, (kind, v) in features.items()})


def test_masked_crc_known_values():
    # CRC32C("123456789") = 0xE3069283 (RFC 3720); masking: rotate right 15, add 0xa282ead8
    crc = 0xE3069283
    want = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc(b"123456789") == want


def test_frame_layout():
    rec = frame(b"hello")
    assert struct.unpack("<Q", rec[:8])[0] == 5
    assert struct.unpack("<I", rec[8:12])[0] == masked_crc(rec[:8])
    assert rec[12:17] == b"hello"
    assert struct.unpack("<I", rec[17:])[0] == masked_crc(b"hello")


def test_encoding_is_deterministic_and_sorted():
    a = _ours()
    b = _ours(dict(reversed(list(FEATURES.items()))))
    assert a == b
    assert list(decode_example(a)) == sorted(FEATURES)


def test_decoder_round_trip():
    got = decode_example(_ours())
    for key, (kind, values) in FEATURES.items():
        if kind == "float":
            assert got[key] == [struct.unpack("<f", struct.pack("<f", v))[0] for v in values]
        else:
            assert got[key] == values


def test_reader_verifies_crcs(tmp_path):
    path = tmp_path / "shard"
    payloads = [b"", b"x", b"y" * 70000]
    path.write_bytes(b"".join(frame(p) for p in payloads))
    assert [d for _, d in iter_records(path)] == payloads
    spans = record_spans(path)
    assert spans == [(0, 16), (16, 17), (33, 70016)]
    data = bytearray(path.read_bytes())
    data[16 + 12] ^= 1  # flip a bit of the second record's data
    path.write_bytes(bytes(data))
    with pytest.raises(RecordError, match="data CRC mismatch in the record at byte 16"):
        list(iter_records(path))
    data[16 + 12] ^= 1
    data[33] ^= 1  # the third record's length
    path.write_bytes(bytes(data))
    with pytest.raises(RecordError, match="length CRC mismatch at byte 33"):
        list(iter_records(path))
    with pytest.raises(RecordError, match="length CRC"):
        record_spans(path)
    path.write_bytes(frame(b"abc")[:-2])
    with pytest.raises(RecordError, match="truncated"):
        list(iter_records(path))


def test_tensorflow_reads_our_records(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "shard"
    examples = [_ours(), _ours({"image/height": ("int64", [7])})]
    path.write_bytes(b"".join(frame(e) for e in examples))
    got = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    assert got == examples
    parsed = tf.train.Example.FromString(examples[0])
    feats = parsed.features.feature
    for key, (kind, values) in FEATURES.items():
        lst = {"bytes": feats[key].bytes_list, "int64": feats[key].int64_list,
               "float": feats[key].float_list}[kind]
        assert feats[key].WhichOneof("kind") == f"{kind}_list"  # empty lists keep their kind
        if kind == "float":
            assert list(lst.value) == pytest.approx(values, abs=1e-6)
        else:
            assert list(lst.value) == values
    # protobuf's own encoder gives the same bytes up to the order of the map entries
    assert len(parsed.SerializeToString()) == len(examples[0])
