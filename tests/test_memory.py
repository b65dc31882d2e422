"""Memory estimates, the load-together-or-in-turn decision, and turn order (fast, no llama.cpp)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from localtable.backends.llamacpp.memory import ModelNeed, estimate, plan_memory
from localtable.debate.protocol import Debate
from localtable.errors import ConfigError
from localtable.machine import available_cores, cgroup_cpu_quota, mem_available, parse_size
from localtable.record import MemoryRecord, PanelistRecord, RunRecord, transcript_sha256
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, make_record
from tests.realmodels import smollm2_path

MIB = 1 << 20
R1 = "Reasoning: because {a}.\nAnswer: {a}"
R2 = "Reasoning: still {a}.\nInfluenced by: nobody\nDecision: maintained\nPosition: A\nAnswer: {a}"
LABELS = "Position A: yes\nA1: A\nB2: A\nC3: A"
SUMMARY = "Summary: Agreed.\nCounterpoint: Risks.\nAnswer: Yes, it helps."


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2GB", 2 << 30), ("1.5G", int(1.5 * (1 << 30))), ("800MiB", 800 * MIB), ("4096", 4096),
     ("512 mb", 512 * MIB), ("1t", 1 << 40)],
)  # fmt: skip
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "two GB", "-1G", "0", "1.5.2G", "3 GBs"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="memory size"):
        parse_size(text)


def test_mem_available_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   12345678 kB\n")
    assert mem_available(meminfo) == 12345678 * 1024
    assert mem_available(tmp_path / "missing") is None


def test_estimate_from_the_gguf_header() -> None:
    # SmolLM2-135M: 30 layers, 3 KV heads of 64: n_ctx x 30 x (192 + 192) x 2 bytes
    need = estimate("smollm2", smollm2_path(), n_ctx=4000, kv_slots=2, n_ubatch=128)
    assert need.kv_bytes == 4096 * 30 * 384 * 2  # n_ctx padded to a multiple of 256
    assert need.file_bytes == smollm2_path().stat().st_size
    assert 0 < need.compute_bytes < 200 * MIB
    assert need.total() == need.file_bytes + 2 * (need.kv_bytes + need.compute_bytes)
    # 9 heads: 128 x 4096 x 9 float attention scores, four times as many for 512
    larger = estimate("smollm2", smollm2_path(), n_ctx=4000, kv_slots=2, n_ubatch=512)
    assert larger.compute_bytes - need.compute_bytes >= 384 * 4096 * 9 * 4


def need(name: str, file_mib: int, kv_mib: int, slots: int) -> ModelNeed:
    return ModelNeed(name=name, file_bytes=file_mib * MIB, kv_bytes=kv_mib * MIB,
                     compute_bytes=10 * MIB, kv_slots=slots)  # fmt: skip


def test_plan_together_when_everything_fits() -> None:
    plan = plan_memory([need("a", 100, 90, 2), need("b", 250, 70, 1)], budget=2000 * MIB)
    assert not plan.in_turn and plan.kv_slots == {"a": 2, "b": 1} and plan.note == ""
    assert not plan_memory([need("a", 100, 90, 2)], budget=None).in_turn  # unknown: no limit


def test_plan_drops_extra_kv_caches_before_loading_in_turn() -> None:
    needs = [need("a", 100, 90, 3), need("b", 250, 70, 1)]
    plan = plan_memory(needs, budget=600 * MIB)  # all caches: 680 MiB; one each: 530 MiB
    assert not plan.in_turn and plan.kv_slots == {"a": 1, "b": 1}
    assert "one KV cache per model" in plan.note


def test_plan_in_turn_when_the_models_do_not_fit_together() -> None:
    needs = [need("a", 100, 90, 2), need("b", 250, 70, 1)]
    plan = plan_memory(needs, budget=400 * MIB)
    assert plan.in_turn and plan.kv_slots == {"a": 2, "b": 1}  # each fits on its own
    assert "one at a time" in plan.note and "over the budget" not in plan.note
    tiny = plan_memory(needs, budget=200 * MIB)
    assert tiny.in_turn and tiny.kv_slots == {"a": 1, "b": 1}
    assert "b alone needs" in tiny.note and "over the budget" in tiny.note


def test_a_batched_group_is_counted_as_a_context_of_its_own() -> None:
    # SmolLM2-135M at n_ctx 4096: three turns decoded together need a context of up to
    # 3 x 4096 cells besides the model's own KV caches (batchdecode.py)
    alone = estimate("smollm2", smollm2_path(), n_ctx=4000, kv_slots=2, n_ubatch=128)
    grouped = estimate(
        "smollm2", smollm2_path(), n_ctx=4000, kv_slots=2, n_ubatch=128, group_sequences=3
    )
    assert alone.group_bytes == 0 and grouped.group_sequences == 3
    assert grouped.group_bytes > 3 * alone.kv_bytes  # its KV cache and its compute buffer
    assert grouped.total() == alone.total() + grouped.group_bytes
    assert grouped.total(1) == alone.total(1) + grouped.group_bytes  # also when in turn
    one = estimate("smollm2", smollm2_path(), n_ctx=4000, kv_slots=2, n_ubatch=128,
                   group_sequences=1)  # fmt: skip
    assert one.group_bytes == 0  # a lone turn generates the usual way


def test_the_plan_says_when_the_batched_group_is_what_does_not_fit() -> None:
    plain = need("a", 100, 90, 1)
    grouped = plain.model_copy(update={"group_sequences": 3, "group_bytes": 300 * MIB})
    assert plan_memory([plain], budget=300 * MIB).note == ""  # 200 MiB without the group
    plan = plan_memory([grouped], budget=300 * MIB)  # 500 MiB with it
    assert plan.in_turn and "a, 3 turns, ~0.29 GiB" in plan.note and "over the budget" in plan.note
    assert "--decode sequential" in plan.note  # the fix, since without the group it fits
    worse = plan_memory([grouped], budget=150 * MIB)  # over the budget even without it
    assert "over the budget" in worse.note and "--decode sequential" not in worse.note
    # two models: the group of one is what puts them over, and the note names it
    two = plan_memory([grouped, need("b", 50, 10, 1)], budget=550 * MIB)  # 570 MiB
    assert two.in_turn and "batched decode groups' contexts: a, 3 turns" in two.note


def test_a_batched_plan_records_the_group_context(tmp_path: Path) -> None:
    from localtable.backends.llamacpp.backend import LlamaCppBackend
    from localtable.config import load_config
    from localtable.session.session import Session
    from tests.realmodels import fast_config

    @dataclass
    class NoEngine:  # prepare starts the engine early; the plan needs none
        one_at_a_time: bool = False

        def start(self) -> None:
            pass

    loaded = load_config(fast_config(tmp_path))
    panel = loaded.config.panel("fast")  # two SmolLM2 seats, one Gemma seat
    session = Session(builtin(), loaded)  # not closed: NoEngine has nothing to close
    session.add_backend(LlamaCppBackend(NoEngine()))  # type: ignore[arg-type]

    def plan(decode: str, debates: int = 1) -> MemoryRecord:
        planned = session.plan(panel, loaded, verify=False, reuse_prefix=True,
                               memory_budget=None, decode=decode, debates=debates)  # fmt: skip
        assert planned.memory is not None
        return planned.memory

    sequential, batched, grouped = plan("sequential"), plan("batched"), plan("batched", 3)
    assert sequential.batched_bytes == {}
    assert set(batched.batched_bytes) == {"smollm2-135m"}  # Gemma's lone turn: no group
    assert set(grouped.batched_bytes) == {"smollm2-135m", "gemma3-270m"}  # 6 and 3 turns
    assert grouped.batched_bytes["smollm2-135m"] > 2 * batched.batched_bytes["smollm2-135m"]
    for memory in (batched, grouped):
        for name, extra in memory.batched_bytes.items():
            assert memory.estimated_bytes[name] == sequential.estimated_bytes[name] + extra


@dataclass
class OrderingSpeaker(FakeSpeaker):
    """Runs each round's turns in reverse panel order, as a model-grouping order may."""

    orders: list[list[str]] = field(default_factory=list)

    def turn_order(
        self, round_no: int, panel: list[PanelistRecord], then: str | None
    ) -> list[PanelistRecord]:
        order = list(reversed(panel))
        self.orders.append([p.name for p in order])
        return order


def replies() -> dict[str, list[str | Exception]]:
    return {
        "A1": [R1.format(a="Yes, it helps"), LABELS, R2.format(a="Yes, it helps"), SUMMARY],
        "B2": [R1.format(a="Yes, it helps"), R2.format(a="Yes, it helps")],
        "C3": [R1.format(a="Yes, it helps"), R2.format(a="Yes, it helps")],
    }


def run(speaker: FakeSpeaker) -> RunRecord:
    record = make_record(["A1", "B2", "C3"])
    return Debate(record, speaker, builtin(), lambda r: None, lambda e: None).run()


def test_turn_order_changes_neither_the_record_nor_the_transcript() -> None:
    plain, ordered = FakeSpeaker(replies()), OrderingSpeaker(replies())
    a, b = run(plain), run(ordered)
    assert all(t.status == "ok" for t in [*a.turns, *b.turns])  # nothing compared is empty
    assert b.summary and b.summary.status == "ok" and b.labelings[0].status == "ok"
    assert ordered.orders == [["C3", "B2", "A1"], ["C3", "B2", "A1"]]
    assert [c.panelist for c in ordered.calls[:3]] == ["C3", "B2", "A1"]
    assert [(t.round, t.panelist) for t in b.turns] == [(t.round, t.panelist) for t in a.turns]
    assert [(t.round, t.panelist) for t in b.turns][:3] == [(1, "A1"), (1, "B2"), (1, "C3")]

    # Prompts see the same earlier rounds whatever the order within a round.
    def prompts(speaker: FakeSpeaker) -> list[tuple[str, str]]:
        return sorted((c.panelist, repr(c.messages)) for c in speaker.calls)

    assert prompts(plain) == prompts(ordered)
    assert transcript_sha256(a) == transcript_sha256(b)


@dataclass
class StubEngine:
    one_at_a_time: bool
    active: list[str] = field(default_factory=list)


def test_llamacpp_backend_groups_turns_by_model_when_loading_one_at_a_time() -> None:
    from localtable.backends.llamacpp.backend import LlamaCppBackend, LlamaSeat

    record = make_record(["A1", "B2", "C3"])
    record.panelists[1] = record.panelists[1].model_copy(update={"model": "m2"})
    record.panelists[0] = record.panelists[0].model_copy(update={"model": "m1"})
    record.panelists[2] = record.panelists[2].model_copy(update={"model": "m1"})
    engine = StubEngine(one_at_a_time=False, active=["m2"])
    backend = LlamaCppBackend(engine)  # type: ignore[arg-type]
    backend.seats = {
        m: LlamaSeat(backend, None, key=m, info=None)  # type: ignore[arg-type]
        for m in ("m1", "m2")
    }

    def names(then: str | None) -> list[str]:
        return [p.name for p in backend.turn_order(2, record.panelists, then)]

    assert names(None) == ["A1", "B2", "C3"]  # together: the panel's order
    engine.one_at_a_time = True
    assert names(None) == ["B2", "A1", "C3"]  # the loaded model first, then by model
    assert names("A1") == ["B2", "A1", "C3"]  # m1 speaks next: its group last
    assert names("B2") == ["A1", "C3", "B2"]  # m2 is loaded but speaks next: last


def test_cores_capped_by_a_cgroup_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None  # no cgroup files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 2 threads
    assert cgroup_cpu_quota(tmp_path) == 2
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert cgroup_cpu_quota(tmp_path) == 3
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_two_entries_for_one_file_share_one_load_with_both_kv_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from localtable.backends.llamacpp.backend import LlamaCppBackend, LlamaCppSettings
    from localtable.backends.llamacpp.messages import LoadRequest, ModelInfo
    from localtable.record import MemoryRecord, ModelRecord

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF not really a model")
    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    settings = LlamaCppSettings(
        path=str(gguf), n_ctx_requested=512, n_batch=128, n_ubatch=128, threads=1,
        gpu_layers=0, flash_attn=False,
    )  # fmt: skip
    models = [
        ModelRecord(
            name=name,
            backend="llamacpp",
            source="file",
            sha256=sha,
            size=gguf.stat().st_size,
            chat_mode="completion",
            n_ctx=512,
            settings=settings.model_dump(mode="json"),
        )  # fmt: skip
        for name in ("first", "second")
    ]
    info = ModelInfo(n_ctx=512, n_batch=128, n_ubatch=128, threads=1, type_k="f16",
                     type_v="f16", bos_token="", eos_token="", add_bos=False,
                     chat_template=None, system_info="", llama_cpp_python="0.3.36",
                     load_seconds=0.1)  # fmt: skip

    @dataclass
    class RecordingEngine:
        one_at_a_time: bool = False
        loads: list[LoadRequest] = field(default_factory=list)

        def load(self, req: LoadRequest) -> ModelInfo:
            self.loads.append(req)
            return info

    engine = RecordingEngine()
    backend = LlamaCppBackend(engine)  # type: ignore[arg-type]
    memory = MemoryRecord(kv_caches={"first": 2, "second": 1})
    backend.open(models, memory, reuse_prefix=True, templates=builtin(), today="2026-12-01",
                 loaded=None)  # fmt: skip
    assert {load.model_key for load in engine.loads} == {engine.loads[0].model_key}
    assert [load.kv_slots for load in engine.loads] == [3, 3]  # one model, both entries' caches
