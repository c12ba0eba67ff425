"""The bundled metadata: counts, and that the independent sources agree."""

import hashlib
import re
from collections import Counter
from importlib.resources import files

from imagenet_prep.sources import metadata


def test_counts_and_order():
    w = metadata.wnids()
    assert len(w) == 1000 == len(set(w))
    assert list(w) == sorted(w)
    assert all(re.fullmatch(r"n\d{8}", x) for x in w)
    assert w[0] == "n01440764" and w[-1] == "n15075141"
    assert metadata.wnid_to_index()["n01440764"] == 0
    assert metadata.wnid_to_index()["n15075141"] == 999


def test_descriptions_agree_with_tf_metadata():
    desc = metadata.descriptions()
    meta = metadata.imagenet_metadata()
    assert len(meta) == 21842
    assert set(desc) == set(metadata.wnids())
    assert all(meta[w] == desc[w] for w in metadata.wnids())
    assert desc["n01440764"] == "tench, Tinca tinca"
    # the known duplicate class name
    assert [w for w, d in desc.items() if d == "crane"] == ["n02012849", "n03126707"]


def test_val_labels_equal_devkit_ground_truth_through_id_order():
    labels = metadata.val_labels()
    assert len(labels) == 50_000
    assert Counter(labels) == {w: 50 for w in metadata.wnids()}
    ids = metadata.devkit_id_to_wnid()
    assert sorted(ids) == list(range(1, 1001))
    assert ids[1] == "n02119789" and ids[1000] == "n03255030"
    assert set(ids.values()) == set(metadata.wnids())
    gt = metadata.devkit_ground_truth()
    assert len(gt) == 50_000 and gt[:5] == (490, 361, 171, 822, 297)
    assert tuple(ids[i] for i in gt) == labels
    assert labels[0] == "n01751748" and labels[292] == "n01440764"
    assert metadata.val_name(293) == "ILSVRC2012_val_00000293.JPEG"


def test_special_images_list():
    special = metadata.special_images()
    assert len(special) == 23
    assert Counter(special.values()) == {"cmyk": 22, "png": 1}
    assert special["n02105855_2933.JPEG"] == "png"
    assert all(n.split("_")[0] in metadata.wnid_to_index() for n in special)


def test_bundled_files_match_provenance_checksums():
    data = files("imagenet_prep.sources.metadata").joinpath("data")
    provenance = data.joinpath("PROVENANCE.md").read_text()
    rows = re.findall(r"^\| (\S+\.txt) \| \d+ \| \d+ \| ([0-9a-f]{64}) \|$", provenance, re.M)
    assert len(rows) == 8
    for name, sha in rows:
        assert hashlib.sha256(data.joinpath(name).read_bytes()).hexdigest() == sha, name


def test_hub_class_names_follow_the_documented_rule():
    """The Hub's imagenet-1k names: the devkit words in WNID order, n03126707 renamed."""
    names = metadata.hub_class_names()
    desc = metadata.descriptions()
    want = [metadata.HUB_RENAMED.get(w, desc[w]) for w in metadata.wnids()]
    assert list(names) == want and len(set(names)) == 1000
    assert names[134] == "crane" and names[517] == "crane2"
    assert names[638] == "maillot" and names[639] == "maillot, tank suit"
