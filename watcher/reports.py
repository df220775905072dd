"""What one processed batch amounts to: the figures the loop, the logs, metrics and telemetry use.

Its own module so that monitoring (metrics, telemetry) reads a batch's report without importing
the pipeline that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BatchReport:
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # source path → reason
    arrival_delays: list[float] = field(default_factory=list)  # file's last write → committed row
    model_version: str = ""
    # Seconds of the batch's thread in each stage ("read", "to the device", "model", "commit", "move", ...).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Frames per (camera, label): "" for frames without a camera; label female, male or failed.
    per_camera: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return self.ok + self.failed


@dataclass
class RunReport:
    """What one run of the daemon did, for its last log lines and `watch --once`'s exit code."""

    ok: int = 0
    failed: int = 0
    batches: int = 0
    recovered: int = 0
    # Frames in the inbox when the run ended (still being written, or not taken before a stop).
    left_in_inbox: list[str] = field(default_factory=list)
    # Frames left claimed because their batch could not be stored; the next run recovers them.
    left_parked: int = 0
    # Summed over the batches (which overlap: together they can exceed the run's wall time).
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, batch: BatchReport) -> None:
        self.ok += batch.ok
        self.failed += batch.failed
        self.batches += 1
        for stage, seconds in batch.stage_seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
