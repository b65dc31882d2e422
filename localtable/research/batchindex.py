"""The batch index: batch.json, what a batch is and where each of its debates is.

A batch lives in <runs-dir>/<name>/: one run folder per (question, seed) and
batch.json, a versioned BatchIndex. Reading a batch (score, compare) needs only
this module; running one is the batch package (localtable/batch/), which imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from localtable.errors import RecordError, RecordWriteError
from localtable.record import (
    MAX_ROUNDS,
    PACKED_RECORD_FILE,
    RECORD_FILE,
    RUN_ID,
    RunRecord,
    read_record,
)
from localtable.research.questions import Question
from localtable.storage import StorageError, read_versioned, write_atomic

INDEX_FILE = "batch.json"
# 2 added each entry's `ran_on` (where the debate ran); version 1 reads as 2 without it.
INDEX_VERSION = 2

# 300,000 questions of a few hundred characters make about 200 MB
INDEX_MAX_BYTES = 1 << 30

EntryStatus = Literal["pending", "running", "complete", "failed", "interrupted", "error"]


class BatchEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question_id: str
    seed: int
    run_dir: str = Field(
        pattern=RUN_ID, description="the run folder in the batch folder: one folder name"
    )
    status: EntryStatus = "pending"
    transcript_sha256: str | None = None
    error: str | None = None
    ran_on: str | None = Field(
        default=None, description="the machine (and worker) that ran it, as the batch saw it"
    )


class BatchIndex(BaseModel):
    """batch.json: what the batch is and where each of its debates is."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[2] = 2  # INDEX_VERSION
    name: str
    source: str = Field(description="the questions file, or task:<name>")
    source_sha256: str
    panel: str
    rounds: int = Field(ge=1, le=MAX_ROUNDS)
    seeds: list[int]
    created_at: datetime
    updated_at: datetime
    questions: list[Question]
    entries: list[BatchEntry]


def _read_v1(raw: dict[str, object]) -> BatchIndex:
    return BatchIndex.model_validate({**raw, "version": INDEX_VERSION})


READERS: dict[int, Callable[[dict[str, object]], BatchIndex]] = {
    1: _read_v1,
    INDEX_VERSION: BatchIndex.model_validate,
}


def index_path(batch_dir: Path) -> Path:
    return batch_dir / INDEX_FILE


def is_batch(path: Path) -> bool:
    return index_path(path).is_file()


def read_index(batch_dir: Path, *, follow_links: bool = True) -> BatchIndex:
    try:
        return read_versioned(
            index_path(batch_dir),
            what="batch index",
            version_key="version",
            limit=INDEX_MAX_BYTES,
            readers=READERS,
            follow_links=follow_links,
        )
    except StorageError as exc:
        raise RecordError(str(exc)) from None


def write_index(batch_dir: Path, index: BatchIndex) -> None:
    """Replace batch.json atomically."""
    try:
        write_atomic(index_path(batch_dir), index.model_dump_json(indent=2).encode("utf-8"))
    except StorageError as exc:
        raise RecordWriteError(str(exc)) from None


def entry_record(batch_dir: Path, entry: BatchEntry) -> RunRecord | None:
    """An entry's run record: its record.json, else a study's shipped record.json.gz
    (research/studypack.py), read without following a link; None when it has neither."""
    run_dir = batch_dir / entry.run_dir
    if (run_dir / RECORD_FILE).is_file():
        return read_record(run_dir)
    if os.path.lexists(run_dir / PACKED_RECORD_FILE):
        return read_record(run_dir, follow_links=False, packed=True)
    return None


def batch_records(batch_dir: Path) -> list[tuple[BatchEntry, RunRecord | None]]:
    """Every entry of a batch with its run record (None when it has none yet)."""
    index = read_index(batch_dir)
    return [(entry, entry_record(batch_dir, entry)) for entry in index.entries]
