"""torchvision's ImageFolder reads the PyTorch layout that `prepare --only pytorch` makes.

The claim in the README is that DATASET/train/WNID/*.JPEG and DATASET/val/WNID/*.JPEG
are the seed's layout, which torchvision loads as they are.  Here torchvision itself
reads a prepared replica: class list and indices, image counts, every image through the
default loader (the replica's CMYK, YCCK, PNG-under-.JPEG and grayscale files included,
which `--only pytorch` leaves byte-identical), and the validation labels against the
devkit's ground truth.  Expectations come from the archives through tarfile and scipy
(expected.py), never from the code under test.

Skipped when torchvision is not installed; on x86_64 with Python 3.11 here:
`pip install torch==2.14.1 torchvision==0.29.1`.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from expected import devkit_truth
from PIL import Image

from imagenet_prep.cli import main
from imagenet_prep.replica.build import make_replica

torchvision = pytest.importorskip("torchvision")
torch = pytest.importorskip("torch")

REPLICA = dict(classes=5, train_per_class=8, val_per_class=3, test=2, size=(64, 48), seed=3)
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"

# What each image quirk of replica.json must look like when PIL opens the file as it is.
QUIRK_LOOK = {
    "cmyk": ("JPEG", "CMYK"),
    "ycck": ("JPEG", "CMYK"),  # Adobe transform 2: PIL converts YCCK to CMYK on open
    "png": ("PNG", "RGB"),
    "grayscale": ("JPEG", "L"),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(archives, DATASET, replica.json) for one replica prepared with --only pytorch."""
    root = tmp_path_factory.mktemp("torchvision")
    archives, ds = root / "archives", root / "dataset"
    info = make_replica(archives, **REPLICA)
    rc = main(["prepare", "--archives", str(archives), "--out", str(ds), "--only", "pytorch"])
    assert rc == 0
    meta = json.loads((archives / "replica.json").read_text())
    # val truth straight from the replica, to cross-check the devkit reading below
    meta["val_labels"] = list(info.val_labels)
    return archives, ds, meta


def _archive_train(archives: Path) -> dict[str, list[str]]:
    """WNID -> image names in its inner class tar, read with tarfile."""
    out: dict[str, list[str]] = {}
    with tarfile.open(archives / TRAIN_TAR) as outer:
        for m in outer:
            assert m.name.endswith(".tar")
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(m).read())) as inner:
                out[m.name[:-4]] = [im.name for im in inner if im.isfile()]
    return out


def _archive_bytes(archives: Path, name: str) -> bytes:
    """Raw bytes of one train or val image, straight from its archive."""
    if name.startswith("ILSVRC2012_val_"):
        with tarfile.open(archives / VAL_TAR) as tf:
            return tf.extractfile(name).read()
    wnid = name.split("_")[0]
    with tarfile.open(archives / TRAIN_TAR) as outer:
        inner = io.BytesIO(outer.extractfile(f"{wnid}.tar").read())
    with tarfile.open(fileobj=inner) as tf:
        return tf.extractfile(name).read()


def _expected(archives: Path, split: str) -> dict[str, list[str]]:
    """WNID -> file names that DATASET/split/WNID/ must hold, from the archives alone."""
    if split == "train":
        return _archive_train(archives)
    out: dict[str, list[str]] = {}
    for name, wnid in devkit_truth(archives).items():
        out.setdefault(wnid, []).append(name)
    return out


def _folder(ds: Path, split: str):
    return torchvision.datasets.ImageFolder(str(ds / split))


@pytest.mark.parametrize("split", ["train", "val"])
def test_classes_indices_and_counts(prepared, split):
    archives, ds, meta = prepared
    expected = _expected(archives, split)
    folder = _folder(ds, split)
    wnids = sorted(expected)
    assert folder.classes == wnids == meta["wnids"]
    assert folder.class_to_idx == {w: i for i, w in enumerate(wnids)}
    total = sum(len(v) for v in expected.values())
    assert len(folder) == len(folder.samples) == len(folder.targets) == total
    assert total == meta["counts"][split]
    if split == "train":
        assert {w: len(v) for w, v in expected.items()} == meta["train_per_class"]
    else:
        assert all(len(v) == REPLICA["val_per_class"] for v in expected.values())
    # exactly the archive's files, each in its own class, with that class's index
    got: dict[str, list[str]] = {}
    for path, target in folder.samples:
        p = Path(path)
        assert folder.classes[target] == p.parent.name
        got.setdefault(p.parent.name, []).append(p.name)
    assert {w: sorted(v) for w, v in got.items()} == {w: sorted(v) for w, v in expected.items()}
    assert Counter(folder.targets) == {folder.class_to_idx[w]: len(v) for w, v in expected.items()}


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_sample_loads_with_default_loader(prepared, split):
    _, ds, _ = prepared
    folder = _folder(ds, split)
    for i, (path, target) in enumerate(folder.samples):
        image, label = folder[i]
        assert label == target
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        with Image.open(path) as raw:
            assert image.size == raw.size
        pixels = np.asarray(image)
        assert pixels.shape == (image.size[1], image.size[0], 3) and pixels.std() > 0


def test_quirk_files_are_in_the_folders_and_load(prepared):
    archives, ds, meta = prepared
    folders = {s: _folder(ds, s) for s in ("train", "val")}
    index = {Path(p).name: (s, i) for s, f in folders.items() for i, (p, _) in enumerate(f.samples)}
    seen = Counter()
    for kind, (fmt, mode) in QUIRK_LOOK.items():
        for name in meta["quirks"][kind]:
            if name.startswith("ILSVRC2012_test_"):
                continue  # test images have no class and no ImageFolder
            split, i = index[name]
            path = folders[split].samples[i][0]
            with Image.open(path) as raw:  # the quirk survived into DATASET unchanged
                assert (raw.format, raw.mode) == (fmt, mode), (kind, name)
            assert Path(path).read_bytes() == _archive_bytes(archives, name)
            image, _ = folders[split][i]
            assert image.mode == "RGB" and np.asarray(image).std() > 0
            seen[kind, split] += 1
    # the replica puts CMYK and grayscale in train and val, YCCK and PNG in train
    assert set(seen) == {("cmyk", "train"), ("cmyk", "val"), ("ycck", "train"),
                         ("png", "train"), ("grayscale", "train"), ("grayscale", "val")}


def test_val_targets_are_devkit_truth(prepared):
    archives, ds, meta = prepared
    truth = devkit_truth(archives)  # meta.mat via scipy.io.loadmat, paired with sorted names
    # the devkit reading agrees with what the replica meant to write
    assert truth == {f"ILSVRC2012_val_{i:08d}.JPEG": w
                     for i, w in enumerate(meta["val_labels"], start=1)}
    folder = _folder(ds, "val")
    assert sorted(Path(p).name for p, _ in folder.samples) == sorted(truth)
    rank = {w: i for i, w in enumerate(sorted(set(truth.values())))}
    for path, target in folder.samples:
        assert target == rank[truth[Path(path).name]], path


def test_train_targets_match_file_names(prepared):
    _, ds, _ = prepared
    folder = _folder(ds, "train")
    for path, target in folder.samples:
        assert Path(path).name.split("_")[0] == folder.classes[target]


def test_dataloader_batches_the_whole_train_split(prepared):
    _, ds, meta = prepared
    t = torchvision.transforms
    folder = torchvision.datasets.ImageFolder(
        str(ds / "train"), transform=t.Compose([t.Resize((32, 32)), t.ToTensor()]))
    loader = torch.utils.data.DataLoader(folder, batch_size=8, shuffle=False, num_workers=0)
    n, labels = 0, []
    for images, targets in loader:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
        n += images.shape[0]
        labels += targets.tolist()
    assert n == meta["counts"]["train"] and labels == folder.targets


# torchvision 0.29 deprecates its image decoders in favour of TorchCodec; they still work.
quiet_tvio = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _tensor(data: bytes):
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _pil_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).astype(int)


@quiet_tvio
@pytest.mark.parametrize("kind,channels", [("grayscale", 1), ("cmyk", 4), ("ycck", 4)])
def test_torchvision_io_decodes_quirk_jpegs(prepared, kind, channels):
    """decode_jpeg / decode_image on the archive's raw bytes (torchvision.io, where present).

    Grayscale decodes to 1 channel and CMYK/YCCK to 4 unless RGB is asked for; with RGB
    the pixels agree with PIL's convert("RGB") (identical on torchvision 0.29.1 with
    Pillow 13; a small tolerance allows other libjpeg builds).
    """
    tvio = torchvision.io
    if not hasattr(tvio, "decode_jpeg") or not hasattr(tvio, "ImageReadMode"):
        pytest.skip(f"torchvision {torchvision.__version__} has no torchvision.io.decode_jpeg")
    archives, _, meta = prepared
    name = meta["quirks"][kind][0]
    data = _archive_bytes(archives, name)
    h, w = _pil_rgb(data).shape[:2]
    decoders = [tvio.decode_jpeg] + ([tvio.decode_image] if hasattr(tvio, "decode_image") else [])
    for decode in decoders:
        raw = decode(_tensor(data), mode=tvio.ImageReadMode.UNCHANGED)
        assert tuple(raw.shape) == (channels, h, w) and raw.dtype == torch.uint8
        rgb = decode(_tensor(data), mode=tvio.ImageReadMode.RGB)
        assert tuple(rgb.shape) == (3, h, w)
        diff = np.abs(rgb.permute(1, 2, 0).numpy().astype(int) - _pil_rgb(data))
        assert diff.max() <= 2, (decode.__name__, name, diff.max())


@quiet_tvio
def test_torchvision_io_png_under_jpeg_name(prepared):
    """The PNG stored as .JPEG: decode_jpeg refuses it, decode_image sniffs and reads it."""
    tvio = torchvision.io
    if not hasattr(tvio, "decode_image") or not hasattr(tvio, "ImageReadMode"):
        pytest.skip(f"torchvision {torchvision.__version__} has no torchvision.io.decode_image")
    archives, _, meta = prepared
    data = _archive_bytes(archives, meta["quirks"]["png"][0])
    assert data.startswith(b"\x89PNG")
    with pytest.raises(RuntimeError, match="Not a JPEG file"):
        tvio.decode_jpeg(_tensor(data))
    rgb = tvio.decode_image(_tensor(data), mode=tvio.ImageReadMode.RGB)
    diff = np.abs(rgb.permute(1, 2, 0).numpy().astype(int) - _pil_rgb(data))
    assert diff.max() == 0  # PNG is lossless: both decoders must agree exactly
