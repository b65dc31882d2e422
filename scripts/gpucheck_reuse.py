"""The localtable CLI with prefix reuse allowed for models with GPU layers.

For scripts/gpu_check.py only: it measures whether prefix reuse gives the
same transcript on a GPU. localtable's engine worker reuses a KV prefix only
for models with no GPU layers (`Worker.cpu_only`, see the worker module); here
that map answers True for every model, nothing else changes.

The engine worker is a spawned process: it imports this file again as
`__mp_main__`, so the patch below runs there before the worker starts.

Usage: python scripts/gpucheck_reuse.py debate ...   (the arguments of `localtable`)
"""

from __future__ import annotations

import importlib
from typing import Any

WORKER_MODULES = ("localtable.backends.llamacpp.worker", "localtable.worker")


class AlwaysTrue(dict[str, bool]):
    def __getitem__(self, key: str) -> bool:
        return True


def patch(module: Any, name: str) -> None:
    """Worker.__init__ then a cpu_only map that says True for every model."""
    worker = module.Worker
    if getattr(worker, "_gpucheck_patched", False):
        return
    original = worker.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if not hasattr(self, "cpu_only"):
            raise SystemExit(f"{name}.Worker has no cpu_only map: update gpucheck_reuse.py")
        self.cpu_only = AlwaysTrue()

    worker.__init__ = __init__
    worker._gpucheck_patched = True


def allow_reuse_on_gpu() -> str:
    for name in WORKER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        patch(module, name)
        return name
    raise SystemExit(f"none of {', '.join(WORKER_MODULES)} found: update gpucheck_reuse.py")


PATCHED = allow_reuse_on_gpu()

if __name__ == "__main__":
    from localtable.cli import main

    main()
