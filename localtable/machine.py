"""This machine, as any part of localtable sees it: the cores this process may use
(its affinity, capped by a cgroup CPU quota), the memory available now and the
default memory budget, sizes as people write them ("2GB"), and the processor's
name. The llama.cpp backend plans with them; the CLI and the benchmarks show and
pass them on.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from localtable.errors import ConfigError

MEMINFO = Path("/proc/meminfo")
BUDGET_SHARE = 0.85  # of MemAvailable: the rest is for the OS, page cache and Python
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def available_cores() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota
    (in a container started with --cpus=2 the affinity still lists every core, and
    more threads than CPUs make llama.cpp very slow)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, quota)) if quota is not None else cores


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """CPUs allowed by the cgroup's quota (v2 cpu.max, v1 cfs_quota_us), rounded up."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # "max 100000" = none
        if quota != "max":
            return -(-int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return -(-quota_us // period_us)
    except (OSError, ValueError):
        pass
    return None


def mem_available(meminfo: Path = MEMINFO) -> int | None:
    """Bytes the kernel says are available now (MemAvailable), None where it does not say."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def default_budget() -> int | None:
    """The memory a panel may plan with when --memory-budget does not say: most of what is
    available now."""
    available = mem_available()
    return int(available * BUDGET_SHARE) if available is not None else None


def parse_size(text: str) -> int:
    """'2GB', '1.5G', '800MiB', '123456' -> bytes (K/M/G/T are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise ConfigError(f"memory size {text!r}: expected e.g. 2GB, 1.5G or 800MB")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value < 1:
        raise ConfigError(f"memory size {text!r} must be positive")
    return int(value)


def cpu_model() -> str:
    """The processor's name, as benchmarks report the machine they ran on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
