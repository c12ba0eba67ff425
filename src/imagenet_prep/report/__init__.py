"""`imagenet-prep report`: one self-contained HTML page showing what a dataset folder holds.

Counts, timings and `check`'s verdict from the stage records, distributions from a
seeded sample of image headers, the converted files, and a contact sheet that puts
each class's training images above its validation images, so validation images
filed under the wrong class stand out at a glance.
"""

from imagenet_prep.report.build import REPORT_NAME, build_report, check_target, default_path

__all__ = ["REPORT_NAME", "build_report", "check_target", "default_path"]
