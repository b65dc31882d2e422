"""Records, batch indexes and models.lock are written to be shared: readable as the
umask allows, not mkstemp's private 0600 (issue #13)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from localtable.config import load_config
from tests.hostile import no_models_config


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_records_and_batch_indexes_are_readable_by_others(tmp_path: Path, umask_022: None) -> None:
    from localtable.batch.run import run_batch
    from tests.test_batch import FakeRunner, request

    result = run_batch(request(tmp_path, seeds=[1]), FakeRunner(), lambda e: None)
    files = [result.batch_dir / "batch.json", *result.batch_dir.glob("*/record.json")]
    assert len(files) == 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_models_lock_is_readable_by_others(tmp_path: Path, umask_022: None) -> None:
    from localtable.models.lock import LockFile, write_lock

    path = write_lock(load_config(no_models_config(tmp_path)), LockFile())
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
