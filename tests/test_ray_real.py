"""Batches on a real Ray cluster on 127.0.0.1, with the tiny models: two workers give the
records of a serial batch; a worker actor killed and the driver SIGKILLed lose and
duplicate nothing; a node without a model file refuses, and the others run the batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, subprocess_env
from tests.realmodels import (
    SMOLLM2_SHA256,
    fast_config,
    localtable,
    smollm2_path,
    tiny_models_block,
)
from tests.test_workers import RAY_ENV, assert_settled, transcripts

pytestmark = [pytest.mark.slow, pytest.mark.ray]
QUESTIONS = [
    {"id": "sum", "question": "What is 7 + 5?", "kind": "number", "answer": 12},
    {"id": "capital", "question": "What is the capital of France?", "kind": "choice",
     "options": ["Paris", "Lyon"], "answer": "Paris"},
]  # fmt: skip


def cluster(nodes: list[dict[str, Any]]) -> Any:
    """A Ray cluster of these nodes on 127.0.0.1 (Ray's own test cluster: its processes
    are this test's, and shutdown() ends them)."""
    os.environ.update(RAY_ENV)  # read when ray is imported, and by the nodes it starts
    os.environ["PYTHONPATH"] = str(REPO)
    from ray.cluster_utils import Cluster

    head, *others = nodes
    c = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **head})
    for node in others:
        c.add_node(**node)
    c.wait_for_nodes(timeout=120)
    return c


@pytest.fixture(scope="module")
def two_cpus() -> Iterator[Any]:
    c = cluster([{"num_cpus": 2}])
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The batch run serially (one worker, this process), as the reference."""
    tmp = tmp_path_factory.mktemp("ray-study")
    cache = tmp_path_factory.mktemp("cache")
    env = subprocess_env(cache) | RAY_ENV
    questions = tmp / "study.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    args = ["batch", str(questions), "--config", str(fast_config(tmp, max_tokens=32)),
            "--seeds", "1-2", "--rounds", "2", "-q"]  # fmt: skip
    serial = localtable(*args, "--runs-dir", str(tmp / "serial"), env=env, timeout=1500)
    assert serial.returncode == 0, serial.stderr
    expected = transcripts(tmp / "serial" / "study")
    assert len(expected) == 4 and None not in expected.values()
    return {"tmp": tmp, "env": env, "args": args, "expected": expected}


def test_two_ray_workers_and_two_local_workers_give_the_serial_records(
    two_cpus: Any, study: dict[str, Any]
) -> None:
    tmp, env, args = study["tmp"], study["env"], study["args"]
    on_ray = localtable(*args, "--runs-dir", str(tmp / "ray"), "--ray", two_cpus.address,
                        "--workers", "2", env=env, timeout=1500)  # fmt: skip
    assert on_ray.returncode == 0, on_ray.stderr
    assert transcripts(tmp / "ray" / "study") == study["expected"]
    assert_settled(tmp / "ray" / "study")
    local = localtable(*args, "--runs-dir", str(tmp / "local"), "--workers", "2", env=env,
                       timeout=1500)  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert transcripts(tmp / "local" / "study") == study["expected"]
    from localtable.record import read_record
    from localtable.research.batchindex import read_index

    index = read_index(tmp / "ray" / "study")
    assert all(e.ran_on and "node" in e.ran_on for e in index.entries)
    # each worker had one core: the threads differ from the serial run, the transcripts not
    record = read_record(tmp / "ray" / "study" / index.entries[0].run_dir)
    assert {m.settings["threads"] for m in record.models} == {1}


def _wait(what: str, check: Any, proc: subprocess.Popen[str], seconds: float = 1200) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert proc.poll() is None, f"the batch ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within {seconds}s"
        time.sleep(0.2)


def _turns(record_file: Path) -> int:
    try:
        return len(json.loads(record_file.read_text())["turns"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_actor_and_a_killed_driver_lose_and_duplicate_nothing(
    two_cpus: Any, study: dict[str, Any]
) -> None:
    import ray

    tmp, env, args = study["tmp"], study["env"], study["args"]
    runs = tmp / "faults"
    batch_dir = runs / "study"
    loud = [a for a in args if a != "-q"]  # progress too: "skipped", "resuming"
    command = [sys.executable, "-m", "localtable", *loud, "--runs-dir", str(runs),
               "--ray", two_cpus.address, "--workers", "2"]  # fmt: skip
    driver = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    work = batch_dir / ".work"

    def mid_debate() -> bool:
        return work.is_dir() and any(_turns(p / "record.json") >= 1 for p in work.iterdir())

    _wait("a debate with a finished turn", mid_debate, driver)
    ray.init(address=two_cpus.address, log_to_driver=False)
    try:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith("localtable-worker-")]  # fmt: skip
        assert len(names) == 2, names
        ray.kill(ray.get_actor(names[0], namespace="localtable"))
    finally:
        ray.shutdown()

    def one_finished_and_one_begun() -> bool:
        finished = [p for p in batch_dir.iterdir() if (p / "record.json").is_file()]
        return bool(finished) and mid_debate()

    _wait("a finished debate and another begun", one_finished_and_one_begun, driver)
    driver.kill()  # SIGKILL: the driver's actors go with it
    _, first = driver.communicate(timeout=120)
    assert "back in the queue" in first, first
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=1500)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stderr and "resuming" in again.stderr
    assert transcripts(batch_dir) == study["expected"]
    assert_settled(batch_dir)


def hub_config(tmp: Path, cache: Path) -> Path:
    """SmolLM2 as a Hub model, "pulled" into one Hugging Face cache folder by hand."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo, file = "localtable-test/smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    snapshot = cache / "models--localtable-test--smollm2" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / file).symlink_to(smollm2_path())
    size = smollm2_path().stat().st_size
    lock = {"lock_version": 1, "models": [{
        "commit": commit, "file": file, "name": "hubsmol", "repo": repo, "revision": commit,
        "files": [{"path": file, "sha256": SMOLLM2_SHA256, "size": size}],
    }]}  # fmt: skip
    (tmp / "models.lock").write_text(json.dumps(lock))
    body = [
        "[debate]", 'panel = "solo"', "", tiny_models_block(),
        "[models.hubsmol]",
        f'source = {{ kind = "hf", repo = "{repo}", file = "{file}", revision = "{commit}" }}',
        'chat = "template"', "", "[panels.solo]",
    ]  # fmt: skip
    for name in ("A", "B"):
        body += ["[[panels.solo.panelists]]", f'name = "{name}"', 'model = "hubsmol"',
                 "sampling = { max_tokens = 32 }", ""]  # fmt: skip
    path = tmp / "models.toml"
    path.write_text("\n".join(body))
    return path


def test_a_node_without_the_model_file_refuses_and_the_batch_goes_on(
    tmp_path: Path, isolated_cache: Path
) -> None:
    has, lacks = tmp_path / "hf-has", tmp_path / "hf-lacks"
    lacks.mkdir()
    config = hub_config(tmp_path, has)
    c = cluster([
        {"num_cpus": 1, "env_vars": {"HF_HUB_CACHE": str(has)}},
        {"num_cpus": 1, "env_vars": {"HF_HUB_CACHE": str(lacks)}},
    ])  # fmt: skip
    try:
        questions = tmp_path / "study.jsonl"
        questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
        env = subprocess_env(isolated_cache) | RAY_ENV | {"HF_HUB_CACHE": str(has)}
        result = localtable("batch", str(questions), "--config", str(config), "--runs-dir",
                            str(tmp_path / "runs"), "--rounds", "1", "--ray", c.address,
                            "--workers", "2", env=env, timeout=1500)  # fmt: skip
    finally:
        c.shutdown()
    assert result.returncode == 0, result.stderr
    # the refusal as it happened (the summary at the end repeats it, indented)
    refusals = [line for line in result.stderr.splitlines()
                if line.startswith("worker ") and " refused: " in line]  # fmt: skip
    assert len(refusals) == 1, result.stderr
    assert "model 'hubsmol'" in refusals[0] and "node " in refusals[0]
    assert "A batch downloads nothing" in refusals[0] and "localtable pull" in refusals[0]
    batch_dir = tmp_path / "runs" / "study"
    done = transcripts(batch_dir)
    assert len(done) == 2
    from localtable.research.batchindex import read_index

    assert len({e.ran_on for e in read_index(batch_dir).entries}) == 1  # the node that has it
    assert_settled(batch_dir)
