"""How many processes `auto` starts: from the cores the process may use (affinity, the cgroup's CPU quota), half
each to ingest and delivery, at least 1 and at most AUTO_MAX, whatever the machine's own count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipper.config.process import AUTO_MAX, DaemonConfig
from shipper.cores import usable_cores


@pytest.mark.parametrize(
    ("cpu_max", "cap"),
    [
        ("max 100000\n", None),  # no quota: affinity and the machine's count decide
        ("50000 100000\n", 1),  # half a core: one
        ("150000 100000\n", 2),  # one and a half: two
        ("400000 100000\n", 4),
        ("garbage\n", None),
    ],
)
def test_usable_cores_is_bounded_by_the_cgroup_quota(tmp_path: Path, cpu_max: str, cap: int | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    machine = min(os.cpu_count() or 1, len(os.sched_getaffinity(0)))
    assert usable_cores(path) == (machine if cap is None else min(machine, cap))


def test_usable_cores_without_a_cgroup_file(tmp_path: Path) -> None:
    assert usable_cores(tmp_path / "absent") == min(os.cpu_count() or 1, len(os.sched_getaffinity(0)))


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, (1, 1)), (2, (1, 1)), (3, (1, 2)), (4, (2, 2)), (8, (4, 4)), (64, (AUTO_MAX, AUTO_MAX))],
)
def test_auto_gives_half_the_cores_to_each_role_within_bounds(cores: int, expected: tuple[int, int]) -> None:
    assert DaemonConfig().workers(cores) == expected


def test_counts_are_taken_as_given_and_zero_zero_is_one_process() -> None:
    assert DaemonConfig(ingest_workers=2, delivery_workers=3).workers(64) == (2, 3)
    assert DaemonConfig(ingest_workers=0, delivery_workers=0).workers(64) == (0, 0)
    with pytest.raises(ValueError, match="both 0"):
        DaemonConfig(ingest_workers=0, delivery_workers=2)
