#!/usr/bin/env bash
# Render the report of a medium replica with headless Chromium into docs/report.png.
#
# The replica is prepared as usual, then two validation class folders are swapped on
# purpose (and val_flatten/ removed, so `check` has nothing to say about it): the page
# must show the swap on its contact sheet.  Needs chromium (apt-get install chromium).
# Usage: tools/screenshot_report.sh [WORKDIR]   (run from the repository root)
set -euo pipefail
work=${1:-$(mktemp -d)}
py=${PYTHON:-python}
out=docs/report.png
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
rm -rf "$work/arch" "$work/ds"
$py -m imagenet_prep fake --out "$work/arch" --classes 30 --train-per-class 40 \
    --val-per-class 8 --size 250x188 >/dev/null
$py -m imagenet_prep prepare --archives "$work/arch" --out "$work/ds" --only all \
    --train-shards 16 --val-shards 4 --no-report >/dev/null 2>&1
# the first two classes the contact sheet shows, swapped
read -r a b < <($py -m imagenet_prep report "$work/ds" --no-check --json \
    | $py -c 'import json, sys; print(*json.load(sys.stdin)["classes_shown"][:2])')
mv "$work/ds/val/$a" "$work/ds/val/swap" && mv "$work/ds/val/$b" "$work/ds/val/$a" \
    && mv "$work/ds/val/swap" "$work/ds/val/$b"
rm -rf "$work/ds/val_flatten"
$py -m imagenet_prep report "$work/ds"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d)" --hide-scrollbars --window-size=1280,2400 \
    --run-all-compositor-stages-before-draw --virtual-time-budget=10000 \
    --screenshot="$work/shot.png" "file://$work/ds/report.html" 2>/dev/null
$py - "$work/shot.png" "$out" <<'PY'
import sys
from PIL import Image
# 256 colours: the noisy replica thumbnails make a full-colour PNG four times larger
im = Image.open(sys.argv[1]).convert("RGB")
im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
    sys.argv[2], optimize=True)
PY
echo "swapped val/$a and val/$b; wrote $out ($(stat -c %s "$out") bytes)"
