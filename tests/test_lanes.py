"""How many batches the model runs at once, and with how many threads each (watcher.pipeline.lanes)."""

from __future__ import annotations

import pytest

from watcher.pipeline.lanes import GPU_LANES, MAX_CPU_LANES, Lanes, plan_lanes


@pytest.mark.parametrize(
    ("cpu_threads", "expected"),
    [
        (1, Lanes(count=1, threads_each=1, all_threads=1)),
        (2, Lanes(count=2, threads_each=1, all_threads=2, shares_cores=True)),
        (3, Lanes(count=3, threads_each=1, all_threads=3, shares_cores=True)),
        (16, Lanes(count=MAX_CPU_LANES, threads_each=16 // MAX_CPU_LANES, all_threads=16, shares_cores=True)),
        (0, Lanes(count=1, threads_each=1, all_threads=1)),
    ],
)
def test_on_a_cpu_each_thread_gets_a_batch_of_its_own(cpu_threads: int, expected: Lanes) -> None:
    assert plan_lanes(on_accelerator=False, cpu_threads=cpu_threads) == expected


def test_on_a_gpu_batches_in_flight_overlap_their_stages_and_share_no_cores() -> None:
    lanes = plan_lanes(on_accelerator=True, cpu_threads=2)
    assert lanes.count == GPU_LANES > 1 and not lanes.shares_cores
    assert lanes.threads_each == lanes.all_threads == 2


@pytest.mark.parametrize(("configured", "count"), [(2, 2), (6, 6), (1, 2)])
def test_batch_gpu_lanes_sets_the_batches_in_flight_on_a_gpu_only(configured: int, count: int) -> None:
    # batch.gpu_lanes: more overlap for a GPU host with cores to spare; never fewer than two, so
    # one batch's commit and moves always overlap another's model work.
    assert plan_lanes(on_accelerator=True, cpu_threads=4, gpu_lanes=configured).count == count
    on_cpu = plan_lanes(on_accelerator=False, cpu_threads=4, gpu_lanes=configured)
    assert on_cpu == plan_lanes(on_accelerator=False, cpu_threads=4)
