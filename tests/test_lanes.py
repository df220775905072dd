"""How many batches the model runs at once, and with how many threads each (watcher.pipeline.lanes)."""

from __future__ import annotations

import pytest

from watcher.pipeline.lanes import MAX_CPU_LANES, Lanes, plan_lanes


@pytest.mark.parametrize(
    ("cpu_threads", "expected"),
    [
        (1, Lanes(count=1, threads_each=1, all_threads=1)),
        (2, Lanes(count=2, threads_each=1, all_threads=2)),
        (3, Lanes(count=3, threads_each=1, all_threads=3)),
        (16, Lanes(count=MAX_CPU_LANES, threads_each=16 // MAX_CPU_LANES, all_threads=16)),
        (0, Lanes(count=1, threads_each=1, all_threads=1)),
    ],
)
def test_on_a_cpu_each_thread_gets_a_batch_of_its_own(cpu_threads: int, expected: Lanes) -> None:
    assert plan_lanes(on_accelerator=False, cpu_threads=cpu_threads) == expected


def test_on_a_gpu_one_batch_is_in_flight() -> None:
    lanes = plan_lanes(on_accelerator=True, cpu_threads=2)
    assert lanes.count == 1 and not lanes.concurrent
