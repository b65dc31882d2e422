"""Which pool runs a batch's debates, and each local worker's share of the machine.

`--ray ADDRESS`: Ray actors (raycluster.py, so ray is imported only then).
`--workers N` above 1: N worker processes here, each with cores / N threads per model
and, unless --memory-budget is given, 1/N of the memory budget. Otherwise: this
process, through one Session for the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable

from localtable.batch.run import BatchRequest, BatchResult, BatchSink, run_batch
from localtable.batch.workers import LocalPool, SessionRunner, WorkerSpec
from localtable.config import LoadedConfig
from localtable.errors import ConfigError
from localtable.session.run import check_vote
from localtable.templates import TemplateSet


def run_on_workers(
    req: BatchRequest,
    loaded: LoadedConfig,
    on_event: BatchSink,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    allow_engine_change: bool = False,
    cores: int = 1,
    machine_budget: int | None = None,
    notice: Callable[[str], None] = lambda text: None,
) -> BatchResult:
    """Run the batch on the pool asked for. `cores` and `machine_budget` are the
    machine's (the CPUs this process may use, the memory one process would get;
    None: unknown), shared among local workers."""
    panel = loaded.config.panel(req.panel)  # an unknown panel or vote: one line, now
    check_vote(req.vote, len(panel.panelists), req.rounds)
    spec = WorkerSpec(
        loaded=loaded, panel=req.panel, allow_engine_change=allow_engine_change,
        verify=req.verify, reuse_prefix=req.reuse_prefix, memory_budget=req.memory_budget,
    )  # fmt: skip
    if ray_address is not None:
        if req.group > 1:
            raise ConfigError(
                f"--group {req.group} runs on this machine's workers, not on Ray actors; "
                "leave out --ray, or --group"
            )
        from localtable.batch.raycluster import RayPool

        with RayPool(spec, workers, ray_address) as ray_pool:
            return run_batch(req, ray_pool, on_event)
    if workers > 1:
        req, spec = share_machine(req, spec, workers, cores, machine_budget, notice)
        return run_batch(req, LocalPool(spec, workers), on_event)
    with SessionRunner(loaded, TemplateSet(), lambda e: None, allow_engine_change) as runner:
        return run_batch(req, runner, on_event)


def share_machine(
    req: BatchRequest,
    spec: WorkerSpec,
    workers: int,
    cores: int,
    machine_budget: int | None,
    notice: Callable[[str], None],
) -> tuple[BatchRequest, WorkerSpec]:
    """Each local worker its share of the cores and of the memory. models.toml's
    threads and --memory-budget, when given, are each worker's and stay as they are."""
    if req.memory_budget is None and machine_budget is not None:
        budget = machine_budget // workers
        req = req.model_copy(update={"memory_budget": budget})
        spec = spec.model_copy(update={"memory_budget": budget})
    if workers > cores:
        notice(
            f"{workers} workers on {cores} cores: more workers than cores slows every debate down"
        )
    return req, spec.model_copy(update={"threads": max(1, cores // workers)})
