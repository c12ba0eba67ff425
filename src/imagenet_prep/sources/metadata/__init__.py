"""The real ILSVRC2012 metadata, bundled with the package (see data/PROVENANCE.md).

Labels everywhere in imagenet-prep are fixed here: a WNID's index is its rank in
the sorted list of the 1000 challenge WNIDs (0..999); the TensorFlow sink adds 1.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

NUM_CLASSES = 1000
NUM_VAL_IMAGES = 50_000


def _lines(name: str) -> list[str]:
    text = files(__package__).joinpath("data", name).read_text(encoding="ascii")
    return text.splitlines()


@cache
def wnids() -> tuple[str, ...]:
    """The 1000 challenge WNIDs in ascending order."""
    return tuple(_lines("synsets.txt"))


@cache
def wnid_to_index() -> dict[str, int]:
    """WNID -> 0..999 (sorted rank), the torchvision/TFDS convention."""
    return {w: i for i, w in enumerate(wnids())}


@cache
def descriptions() -> dict[str, str]:
    """WNID -> human text for the 1000 classes (equal to the devkit's `words`)."""
    out = {}
    for line in _lines("synset_words.txt"):
        wnid, text = line.split(" ", 1)
        out[wnid] = text
    return out


@cache
def imagenet_metadata() -> dict[str, str]:
    """WNID -> human text for all 21,842 fall-2011 synsets (the TFRecord `image/class/text`)."""
    out = {}
    for line in _lines("imagenet_metadata.txt"):
        wnid, text = line.split("\t", 1)
        out[wnid] = text
    return out


@cache
def val_labels() -> tuple[str, ...]:
    """WNID of ILSVRC2012_val_%08d.JPEG for i = 1..50,000 (index i - 1)."""
    return tuple(_lines("val_labels.txt"))


@cache
def devkit_id_to_wnid() -> dict[int, str]:
    """The devkit's ILSVRC2012_ID (1..1000, not alphabetical) -> WNID."""
    out = {}
    for line in _lines("devkit_ids.txt"):
        ident, wnid = line.split()
        out[int(ident)] = wnid
    return out


@cache
def devkit_ground_truth() -> tuple[int, ...]:
    """The devkit's validation ground truth: ILSVRC2012_ID per image in file-name order."""
    return tuple(int(x) for x in _lines("ILSVRC2012_validation_ground_truth.txt"))


@cache
def special_images() -> dict[str, str]:
    """File name -> kind (`cmyk` or `png`) for the 23 files TensorFlow's converter lists.

    Only tests use it: the tool itself detects such files by content.
    """
    out = {}
    for line in _lines("special_images.txt"):
        name, kind = line.split()
        out[name] = kind
    return out


def val_name(number: int) -> str:
    """The file name of validation image `number` (1-based)."""
    return f"ILSVRC2012_val_{number:08d}.JPEG"


HUB_RENAMED = {"n03126707": "crane2"}  # the Hub's one change to the devkit words (PROVENANCE.md)


@cache
def hub_class_names() -> tuple[str, ...]:
    """The 1000 class names of the Hugging Face Hub's `imagenet-1k` (label i is line i)."""
    return tuple(_lines("hf_imagenet_1k_classes.txt"))
