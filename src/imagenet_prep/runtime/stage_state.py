"""Small JSON records in DATASET/.imagenet-prep: what each stage finished, for resume and check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagenet_prep.runtime.files import STATE_DIR, state_dir, write_atomic


def record_path(dataset: Path, name: str) -> Path:
    return dataset / STATE_DIR / f"{name}.json"


def load(dataset: Path, name: str) -> dict[str, Any] | None:
    """The record `name`, or None when that stage has not finished."""
    try:
        return json.loads(record_path(dataset, name).read_text())
    except FileNotFoundError:
        return None


def save(dataset: Path, name: str, data: dict[str, Any]) -> None:
    state_dir(dataset)
    write_atomic(record_path(dataset, name), json.dumps(data, indent=1, sort_keys=True) + "\n")
