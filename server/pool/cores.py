"""How many cores this process may use: its CPU affinity, capped by its cgroup's CPU quota.

``os.cpu_count()`` counts the machine's cores, not the ones a process may run on: under ``taskset``, a
container's ``--cpuset-cpus`` or a CPU quota (``docker --cpus``, Kubernetes limits) a pool sized by it
runs more workers than there are cores for them, and they take turns with the event loop instead of
running beside it. The detection pool is sized by :func:`usable_cores` unless ``--workers`` is given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def quota_cores(quota: str, period: str) -> float | None:
    """Cores' worth of CPU time a quota grants (``quota`` µs per ``period`` µs), ``None`` if unlimited.

    Takes the text of cgroup v2's ``cpu.max`` (``"max 100000"``, ``"150000 100000"``) split in two, or
    cgroup v1's ``cpu.cfs_quota_us`` (``-1`` when unlimited) and ``cpu.cfs_period_us``.
    """
    quota, period = quota.strip(), period.strip()
    if quota in ("max", "-1") or not quota or not period:
        return None
    quota_us, period_us = int(quota), int(period)
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """Controller (``""`` for cgroup v2's unified hierarchy) → this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def cgroup_quota_cores(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The CPU quota of this process's cgroup and its ancestors, in cores (the tightest); ``None`` if none.

    Reads cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) under ``root``.
    """
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    paths = _own_cgroups(proc_cgroup)
    found: list[float] = []
    if "" in paths:  # v2: the quota file sits in the cgroup's directory, ancestors' quotas apply too
        found += _along(root, paths[""], lambda d: _split(d / "cpu.max"))
    if "cpu" in paths:  # v1: the cpu controller's own hierarchy (often mounted as cpu,cpuacct)
        for mount in (root / "cpu", root / "cpu,cpuacct"):
            if mount.is_dir():
                found += _along(mount, paths["cpu"], lambda d: (_read(d / "cpu.cfs_quota_us"),
                                                                 _read(d / "cpu.cfs_period_us")))
                break
    return min(found) if found else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _split(path: Path) -> tuple[str, str]:
    parts = _read(path).split()
    return (parts[0], parts[1]) if len(parts) == 2 else ("", "")


def _along(mount: Path, cgroup: str, read: Callable[[Path], tuple[str, str]]) -> list[float]:
    """The quotas found from ``mount/cgroup`` up to ``mount`` (a limit on an ancestor binds too)."""
    found = []
    directory = mount / cgroup.strip("/") if cgroup.strip("/") else mount
    while True:
        cores = quota_cores(*read(directory))
        if cores is not None:
            found.append(cores)
        if directory == mount or mount not in directory.parents:
            return found
        directory = directory.parent


def usable_cores() -> int:
    """Cores this process may use: CPUs in its affinity mask, at most its cgroup quota rounded up; >= 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota_cores()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)
