"""A study's finished debates as files a checkout keeps (`make study-pack`, `make study`).

runs/ is not committed, so a study that runs across sessions ships its finished
records in a folder of the repository (studies/<batch>/, docs/research.md):

- batch.json: the batch index, its entries only the shipped debates, `updated_at`
  the last shipped debate's end (so the same debates give the same file);
- <run id>/record.json.gz: each finished debate's record (complete or failed), as
  `write_record` writes it, gzip at level 9 with no file name and mtime 0, so the
  same record gives the same bytes and git stores an unchanged one once.

`localtable score studies/<batch>` reads that folder as it is (batchindex.entry_record
reads record.json.gz where record.json is absent); `restore` writes it back as a batch
folder that the same `localtable batch` command resumes, skipping the debates it
holds. Records are input: every file is read bounded (compressed and decompressed),
and neither packing nor restoring follows a symbolic link.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path

from pydantic import BaseModel

from localtable.errors import ConfigError, LocaltableError, RecordError
from localtable.record import PACKED_RECORD_FILE, RECORD_FILE, RECORD_MAX_BYTES, RunRecord
from localtable.record import read_record as read_run_record
from localtable.research.batchindex import INDEX_FILE, BatchEntry, BatchIndex, read_index
from localtable.safefiles import (
    FileRefused,
    check_inside,
    check_real_folder,
    read_bounded,
    remove_tree,
)
from localtable.storage import StorageError, write_atomic

FINISHED = ("complete", "failed")
GZIP_LEVEL = 9


class PackResult(BaseModel):
    shipped: int
    written: int  # records new or changed since the last pack
    removed: int  # shipped before, and no finished debate of the batch now
    unfinished: int  # the batch's other entries: pending, running, interrupted, error


def _refused(exc: FileRefused | StorageError) -> RecordError:
    return RecordError(str(exc))


def _real_folder(path: Path, what: str) -> None:
    try:
        check_real_folder(path, what)
    except FileRefused as exc:
        raise _refused(exc) from None


def packed_bytes(record: RunRecord) -> bytes:
    """A record as shipped: its JSON as write_record writes it, gzipped the same way
    every time."""
    data = record.model_dump_json(indent=2).encode("utf-8")
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def finished_record(batch_dir: Path, entry: BatchEntry) -> RunRecord | None:
    """An entry's record when its debate finished, else None; its folder and file must be
    real (a link is refused, never followed)."""
    run_dir = batch_dir / entry.run_dir
    _real_folder(run_dir, "the run folder")
    if not os.path.lexists(run_dir / RECORD_FILE):
        return None
    record = read_run_record(run_dir, follow_links=False)
    return record if record.status in FINISHED else None


def _write_if_changed(path: Path, data: bytes) -> bool:
    if os.path.lexists(path):
        try:
            if read_bounded(path, RECORD_MAX_BYTES, follow_links=False) == data:
                return False
        except (FileRefused, OSError):
            pass  # write_atomic refuses a link or a special file, with the reason
    try:
        write_atomic(path, data)
    except StorageError as exc:
        raise _refused(exc) from None
    return True


def _remove_unshipped(dest: Path, shipped: set[str]) -> int:
    """Remove the run folders of an earlier pack that this one does not ship."""
    removed = 0
    for child in sorted(dest.iterdir()):
        if child.name in shipped or child.name == INDEX_FILE:
            continue
        if not os.path.lexists(child / PACKED_RECORD_FILE):
            continue  # not a shipped record's folder: not ours to remove
        try:
            check_inside(child, dest, "the shipped run folder")
            remove_tree(child, dest, "the shipped run folder")
        except FileRefused as exc:
            raise _refused(exc) from None
        removed += 1
    return removed


def pack(batch_dir: Path, dest: Path) -> PackResult:
    """Ship the finished debates of the batch in `batch_dir` into `dest` (see above)."""
    _real_folder(batch_dir, "the batch folder")
    _real_folder(dest, "the study folder")
    index = read_index(batch_dir, follow_links=False)
    done = [(e, r) for e in index.entries if (r := finished_record(batch_dir, e)) is not None]
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    for entry, record in done:
        run_dir = dest / entry.run_dir
        _real_folder(run_dir, "the shipped run folder")
        run_dir.mkdir(exist_ok=True)
        written += _write_if_changed(run_dir / PACKED_RECORD_FILE, packed_bytes(record))
    ends = [r.finished_at for _, r in done if r.finished_at is not None]
    shipped = index.model_copy(update={
        "entries": [e for e, _ in done], "updated_at": max(ends, default=index.created_at),
    })  # fmt: skip
    written += _write_if_changed(dest / INDEX_FILE, shipped.model_dump_json(indent=2).encode())
    removed = _remove_unshipped(dest, {e.run_dir for e, _ in done})
    return PackResult(shipped=len(done), written=written, removed=removed,
                      unfinished=len(index.entries) - len(done))  # fmt: skip


def read_shipped(pack_dir: Path) -> tuple[BatchIndex, list[RunRecord]]:
    """A shipped study: its index and every record it lists (each must be there)."""
    _real_folder(pack_dir, "the study folder")
    index = read_index(pack_dir, follow_links=False)
    records = []
    for entry in index.entries:
        _real_folder(pack_dir / entry.run_dir, "the shipped run folder")
        records.append(read_run_record(pack_dir / entry.run_dir, follow_links=False, packed=True))
    return index, records


def restore(pack_dir: Path, batch_dir: Path) -> int | None:
    """Write a shipped study back as the batch folder `batch_dir`, for `localtable batch`
    to resume; None (nothing written) when `batch_dir` is there already. Written beside
    it first and renamed into place, so an interrupted restore leaves no half batch."""
    if os.path.lexists(batch_dir):
        return None
    index, records = read_shipped(pack_dir)
    parent = batch_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = parent / f".{batch_dir.name}.restoring"
    try:
        check_inside(scratch, parent, "the restore folder")
        remove_tree(scratch, parent, "the restore folder")  # what a killed restore left
        scratch.mkdir()
        for entry, record in zip(index.entries, records, strict=True):
            (scratch / entry.run_dir).mkdir()
            data = record.model_dump_json(indent=2).encode("utf-8")
            write_atomic(scratch / entry.run_dir / RECORD_FILE, data)
        write_atomic(scratch / INDEX_FILE, index.model_dump_json(indent=2).encode("utf-8"))
    except (FileRefused, StorageError) as exc:
        raise _refused(exc) from None
    os.rename(scratch, batch_dir)
    return len(records)


def main(argv: list[str] | None = None) -> int:
    """python -m localtable.research.studypack pack BATCH_DIR STUDY_DIR
    python -m localtable.research.studypack restore STUDY_DIR BATCH_DIR"""
    parser = argparse.ArgumentParser(prog="python -m localtable.research.studypack",
                                     description=__doc__.split("\n", 1)[0])  # fmt: skip
    parser.add_argument("action", choices=["pack", "restore"])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.action == "pack":
            done = pack(args.source, args.target)
            print(f"{args.target}: {done.shipped} finished debates shipped ({done.written} "
                  f"files written, {done.removed} removed); {done.unfinished} not finished "
                  "yet, left out")  # fmt: skip
        elif not os.path.lexists(args.source / INDEX_FILE):
            raise ConfigError(f"{args.source}: no shipped study here (no {INDEX_FILE})")
        elif (n := restore(args.source, args.target)) is None:
            print(f"{args.target} is there already: kept as it is, nothing restored")
        else:
            print(f"{args.target}: {n} finished debates restored from {args.source}")
    except LocaltableError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
