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

    @property
    def frames(self) -> int:
        return self.ok + self.failed
