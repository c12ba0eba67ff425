"""`check`: prove a dataset folder complete and consistent, or list what is wrong.

Counts are compared with the records written when each stage finished (which
come from the archives' own index), so a half-extracted folder cannot pass.
check_dataset (dataset.py) runs the folder checks (folders.py) and, where shards
are, the TFRecord (tfrecord.py) and WebDataset (wds.py) checks.  Each reads what
it checks with the formats' and sources' readers and takes every on-disk name
from layout; none imports a writer.
"""

from imagenet_prep.check.dataset import check_dataset

__all__ = ["check_dataset"]
