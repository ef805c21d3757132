"""The detection pool's size: one worker per core the server may use (affinity, cgroup CPU quota)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from server.pool.cores import cgroup_quota_cores, quota_cores
from tests.conftest import ServerProcess

needs_taskset = pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) missing")


async def pool_workers(proc: ServerProcess) -> int:
    async with aiohttp.ClientSession() as http, http.get(proc.url + "/healthz") as resp:
        assert resp.status == 200
        workers: int = (await resp.json())["pool_workers"]
    return workers


def own_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@needs_taskset
async def test_a_server_confined_to_one_core_runs_one_worker(
    server_process: Callable[..., ServerProcess],
) -> None:
    proc = server_process("--log-level", "WARNING", prefix=["taskset", "-c", str(own_cpus()[0])])
    assert await pool_workers(proc) == 1


@needs_taskset
async def test_a_server_on_two_cores_runs_two_workers(server_process: Callable[..., ServerProcess]) -> None:
    cpus = own_cpus()
    if len(cpus) < 2:
        pytest.skip("this process may use one core only")
    proc = server_process("--log-level", "WARNING", prefix=["taskset", "-c", f"{cpus[0]},{cpus[1]}"])
    assert await pool_workers(proc) == 2


@needs_taskset
async def test_workers_given_win_over_the_cores(server_process: Callable[..., ServerProcess]) -> None:
    proc = server_process("--workers", "3", "--log-level", "WARNING",
                          prefix=["taskset", "-c", str(own_cpus()[0])])
    assert await pool_workers(proc) == 3


def test_quota_text_in_cores() -> None:
    assert quota_cores("150000", "100000") == 1.5
    assert quota_cores("max", "100000") is None  # cgroup v2, unlimited
    assert quota_cores("-1", "100000") is None  # cgroup v1, unlimited
    assert quota_cores("", "") is None


def test_cgroup_v2_quota_is_the_tightest_on_the_way_up(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "a" / "b" / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota_cores(tmp_path, "0::/a/b\n") == 1.5
    (tmp_path / "a" / "b" / "cpu.max").write_text("50000 100000\n")
    assert cgroup_quota_cores(tmp_path, "0::/a/b\n") == 0.5
    assert cgroup_quota_cores(tmp_path, "0::/\n") is None  # the root has no cpu.max


def test_cgroup_v1_quota_from_the_cpu_hierarchy(tmp_path: Path) -> None:
    group = tmp_path / "cpu,cpuacct" / "docker" / "x"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("250000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    text = "4:memory:/docker/x\n3:cpu,cpuacct:/docker/x\n"
    assert cgroup_quota_cores(tmp_path, text) == 2.5
    (group / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota_cores(tmp_path, text) is None
