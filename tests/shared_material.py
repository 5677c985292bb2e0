"""Where the workplace's shared material is: ``../shared`` beside the repository (as on the
development machines and in CI), else the directory ``PMB_SHARED_DIR`` names."""

from __future__ import annotations

import os
from pathlib import Path


def shared_path(name: str) -> Path:
    """``shared/<name>`` (pec-samples, zendesk-oas, ...); fails loudly when it is missing."""
    beside = Path(__file__).resolve().parents[2] / "shared" / name
    if beside.exists():
        return beside
    shared = os.environ.get("PMB_SHARED_DIR")
    assert shared, f"shared/{name} not found next to the repo and PMB_SHARED_DIR is unset"
    return Path(shared) / name


PEC_SAMPLES = shared_path("pec-samples")
