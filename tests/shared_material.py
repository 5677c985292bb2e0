"""Where the tests' third-party material is, and what happens when some of it is missing.

Material whose license lets us redistribute it is copied into ``tests/data`` (each folder's
README names source, commit and license): most real PEC samples are in
``tests/data/pec-samples``. The rest stays in the workplace's shared folder: ``shared/<name>``
in the directory ``PMB_SHARED_DIR`` names, else ``../shared`` beside the repository (as on the
development machines). That is Zendesk's OpenAPI description (``zendesk-oas``, no license we
could establish) and the one PEC sample whose publisher gives no license.

Without it, a test that needs it is skipped with one reason naming what is missing
(``need_shared``); the rest of the suite runs. ``PMB_REQUIRE_SHARED=1`` (set by ``.ci/run``)
turns the absence into a failure instead: CI must always run the contract tests against
Zendesk's OAS and every real sample.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PEC_SAMPLES = REPO / "tests" / "data" / "pec-samples"
"""The real PEC samples we may redistribute (see the README there)."""

REQUIRE_ENV = "PMB_REQUIRE_SHARED"
SHARED_ENV = "PMB_SHARED_DIR"

#: What each piece of shared material is, for the skip reason.
SHARED_MATERIAL = {
    "zendesk-oas": "Zendesk's OpenAPI description",
    "pec-samples": "the real PEC samples without a redistribution license",
}

#: Real PEC samples that stay in shared/pec-samples (no license to copy them here).
SHARED_ONLY_PEC_SAMPLES = ("aruba-postacert-inner-2024-02.eml",)


def shared_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def shared_path(name: str) -> Path | None:
    """``shared/<name>`` from ``$PMB_SHARED_DIR`` or ``../shared``; None when neither has it."""
    candidates = []
    if os.environ.get(SHARED_ENV):
        candidates.append(Path(os.environ[SHARED_ENV]) / name)
    candidates.append(REPO.parent / "shared" / name)
    return next((path for path in candidates if path.exists()), None)


def missing_reason(name: str) -> str:
    where = f"{SHARED_ENV}={os.environ[SHARED_ENV]}" if os.environ.get(SHARED_ENV) else (
        f"{SHARED_ENV} unset")
    return (f"needs shared/{name} ({SHARED_MATERIAL[name]}): not beside the clone and "
            f"{where}; see README 'Full test suite'")


def missing_material() -> list[str]:
    """The names of the shared material this checkout cannot find."""
    return [name for name in SHARED_MATERIAL if shared_path(name) is None]


def need_shared(name: str) -> Path:
    """``shared/<name>``, or skip the calling test (fail it under ``PMB_REQUIRE_SHARED=1``)."""
    path = shared_path(name)
    if path is not None:
        return path
    if shared_required():
        pytest.fail(f"{REQUIRE_ENV}=1 but the test {missing_reason(name)}", pytrace=False)
    pytest.skip(missing_reason(name))


def pec_sample_names() -> list[str]:
    """Every real PEC sample EXPECTED.md describes: the copied ones and the shared-only ones."""
    return sorted([p.name for p in PEC_SAMPLES.glob("*.eml")] + list(SHARED_ONLY_PEC_SAMPLES))


def pec_sample(name: str) -> Path:
    """The sample's path: the copy in tests/data, else shared/pec-samples (or skip)."""
    copied = PEC_SAMPLES / name
    if copied.exists():
        return copied
    assert name in SHARED_ONLY_PEC_SAMPLES, f"unknown PEC sample {name}"
    return need_shared("pec-samples") / name
