"""TensorFlow Datasets' `imagenet2012`: its records, record order, shard count and metadata.

The facts are in docs/tfds.md.  A record is a tf.train.Example of three features,
`file_name` (bytes), `image` (the JPEG bytes) and `label` (int64, 0..999, -1 for the
unlabelled test split), written with our Example encoder (keys in sorted order).
A split's records are ordered by the MD5 of the split name followed by the file
name, as TFDS's shuffler orders them; the shard count follows from the split's
serialized size and count by TFDS's rule, and shard k ends at round(n * (k + 1) / K).
The metadata files (`dataset_info.json`, `features.json`, `label.labels.txt`) are
the JSON forms of TFDS's DatasetInfo and FeaturesDict protos for that builder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from imagenet_prep.formats import tfrecord as tfr
from imagenet_prep.layout import TFDS_NAME as NAME
from imagenet_prep.layout import TFDS_SPLIT as SPLIT_NAMES
from imagenet_prep.layout import TFDS_VERSION as VERSION
from imagenet_prep.sources import metadata
from imagenet_prep.sources.names import Names

FILE_FORMAT = "tfrecord"
SPLITS = ("train", "val", "test")  # our split names, in the order TFDS lists them
FILEPATH_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
LABELS_FILE = "label.labels.txt"  # ClassLabel's names, beside the info (feature key `label`)
INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
RECORD_OVERHEAD = 16  # a TFRecord's length, two CRCs
MIN_SHARD_BYTES = 64 << 20
MAX_SHARD_BYTES = 1024 << 20
_U64 = (1 << 64) - 1


def shard_name(split: str, k: int, shards: int) -> str:
    """`imagenet2012-train.tfrecord-00000-of-01024` (TFDS's filepath template)."""
    return f"{NAME}-{SPLIT_NAMES[split]}.{FILE_FORMAT}-{k:05d}-of-{shards:05d}"


# --- one record -----------------------------------------------------------------------

def example_parts(image: bytes, name: str, label: int) -> list[bytes]:
    """The Example's bytes as pieces, the image bytes passed through uncopied."""
    return tfr.encode_example_parts({
        "file_name": tfr.bytes_feature([name.encode()]),
        "image": tfr.bytes_feature_parts(image),
        "label": tfr.int64_feature([label & _U64]),  # -1 as protobuf's 10-byte varint
    })


def _varint_len(x: np.ndarray) -> np.ndarray:
    n = np.ones(len(x), dtype=np.int64)
    for bits in range(7, 64, 7):
        n += x >= (1 << bits)
    return n


def example_sizes(name_lengths: np.ndarray, labels: np.ndarray, image_sizes: np.ndarray
                  ) -> np.ndarray:
    """The serialized size of each Example (what TFDS sums into `numBytes`), from the
    name lengths, labels and image sizes alone (vectorised: no record is built)."""
    def entry(key: int, feature: np.ndarray) -> np.ndarray:
        inner = 2 + key + 1 + _varint_len(feature) + feature  # key field, value field
        return 1 + _varint_len(inner) + inner

    def bytes_feature(n: np.ndarray) -> np.ndarray:
        one = 1 + _varint_len(n) + n  # BytesList.value
        return 1 + _varint_len(one) + one  # Feature.bytes_list

    label = np.where(labels < 0, 10, _varint_len(np.maximum(labels, 0).astype(np.int64)))
    int64 = 2 + 2 + label  # Feature.int64_list { packed value }: tags and lengths, a byte each
    body = (entry(len("file_name"), bytes_feature(name_lengths.astype(np.int64)))
            + entry(len("image"), bytes_feature(image_sizes.astype(np.int64)))
            + entry(len("label"), int64))
    return 1 + _varint_len(body) + body


# --- order and shards -----------------------------------------------------------------

def record_order(names: Names | Sequence[str], split: str) -> np.ndarray:
    """The permutation TFDS writes a split in: ascending MD5(split name + file name),
    read as a 128-bit number.  Two 64-bit halves sorted with lexsort (no 1.28 M objects)."""
    salt = hashlib.md5(SPLIT_NAMES[split].encode())
    encoded = names.encoded() if isinstance(names, Names) else (n.encode() for n in names)
    digests = bytearray(16 * len(names))
    for i, name in enumerate(encoded):
        h = salt.copy()
        h.update(name)
        digests[16 * i:16 * i + 16] = h.digest()
    halves = np.frombuffer(digests, dtype=">u8").reshape(-1, 2)
    return np.lexsort((halves[:, 1], halves[:, 0]))


def shard_count(total_bytes: int, records: int) -> int:
    """TFDS's number of shards for a split of `records` Examples of `total_bytes`.

    With the 16 bytes of framing per record: 1024 when shards of 64 MiB to 1 GiB allow it,
    more (a multiple of 1024) when 1 GiB shards need more, else the largest power of two
    from 512 down to 2 in that range; 1 when none fits."""
    size = total_bytes + records * RECORD_OVERHEAD
    most, least = size // MIN_SHARD_BYTES, size // MAX_SHARD_BYTES
    if least <= 1024 <= most and records >= 1024:
        return 1024
    if least > 1024:
        n = 2048
        while not (n >= least and records >= n):
            n += 1024
        return n
    for n in (512, 256, 128, 64, 32, 16, 8, 4, 2):
        if least <= n <= most and records >= n:
            return n
    return 1


def shard_ends(records: int, shards: int) -> list[int]:
    """Where each shard ends: round(records * k / shards) for k = 1..shards (Python's
    round, half to even, as TFDS computes it)."""
    return [round(records * k / shards) for k in range(1, shards + 1)]


# --- metadata files -------------------------------------------------------------------

DESCRIPTION = (
    "ILSVRC 2012 (ImageNet): 1,281,167 training and 50,000 validation images in 1000 "
    "classes, and 100,000 unlabelled test images. Written by imagenet-prep from the "
    "official archives in the layout of TensorFlow Datasets' imagenet2012 builder.")
CITATION = """@article{ILSVRC15,
  author = {Olga Russakovsky and Jia Deng and Hao Su and Jonathan Krause and Sanjeev Satheesh and Sean Ma and Zhiheng Huang and Andrej Karpathy and Aditya Khosla and Michael Bernstein and Alexander C. Berg and Li Fei-Fei},
  title = {{ImageNet Large Scale Visual Recognition Challenge}},
  journal = {International Journal of Computer Vision (IJCV)},
  year = {2015},
  volume = {115},
  number = {3},
  pages = {211-252},
  doi = {10.1007/s11263-015-0816-y}
}"""  # noqa: E501


def dataset_info(splits: Sequence[tuple[str, list[int], int]]) -> str:
    """dataset_info.json for (split, records per shard, serialized bytes) in split order.

    The proto's JSON form: 64-bit integers as strings, camelCase names, sorted keys.
    `fileFormat` and `moduleName` are left out: they default to tfrecord and to the
    registered builder, and TFDS 4.9 under protobuf 6+ fails to restore a scalar field
    its builder code does not set (docs/tfds.md)."""
    info = {
        "citation": CITATION,
        "description": DESCRIPTION,
        "location": {"urls": ["https://image-net.org/"]},
        "name": NAME,
        "splits": [{
            "filepathTemplate": FILEPATH_TEMPLATE, "name": SPLIT_NAMES[split],
            "numBytes": str(num_bytes), "shardLengths": [str(n) for n in lengths],
        } for split, lengths, num_bytes in splits],
        "supervisedKeys": {"tuple": {"items": [{"featureKey": "image"},
                                               {"featureKey": "label"}]}},
        "version": VERSION,
    }
    return json.dumps(info, indent=2, sort_keys=True)


def features() -> str:
    """features.json: FeaturesDict {file_name: Text, image: Image(jpeg, (-1, -1, 3), uint8),
    label: ClassLabel(1000)}, the feature classes named as TFDS restores them."""
    core = "tensorflow_datasets.core.features."
    doc = {
        "featuresDict": {"features": {
            "file_name": {"pythonClassName": core + "text_feature.Text", "text": {}},
            "image": {
                "image": {"dtype": "uint8", "encodingFormat": "jpeg",
                          "shape": {"dimensions": ["-1", "-1", "3"]}},
                "pythonClassName": core + "image_feature.Image",
            },
            "label": {"classLabel": {"numClasses": str(metadata.NUM_CLASSES)},
                      "pythonClassName": core + "class_label_feature.ClassLabel"},
        }},
        "pythonClassName": core + "features_dict.FeaturesDict",
    }
    return json.dumps(doc, indent=4, sort_keys=True)


def labels_text() -> str:
    """label.labels.txt: the 1000 WNIDs in label order, one a line."""
    return "".join(w + "\n" for w in metadata.wnids())


# --- what the metadata must say, from the stage's state (writer and check) ------------

def complete_splits(state: dict) -> list[tuple[str, list[int], int]]:
    """(split, records per shard, serialized bytes) of every split whose shards the state
    lists in full, in TFDS's split order: what dataset_info.json describes."""
    out = []
    for split in SPLITS:
        info = state.get("splits", {}).get(split)
        if info is None:
            continue
        n = info["shards"]
        entries = [state["shards"].get(shard_name(split, k, n)) for k in range(n)]
        if all(e is not None for e in entries):
            out.append((split, [e["records"] for e in entries],
                        sum(e.get("example_bytes", 0) for e in entries)))
    return out


def metadata_files(state: dict) -> dict[str, str]:
    """File name -> the text each metadata file must hold, given the state."""
    return {INFO_FILE: dataset_info(complete_splits(state)), FEATURES_FILE: features(),
            LABELS_FILE: labels_text()}
