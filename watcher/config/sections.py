"""The sections about finding and batching frames, and the daemon's service side."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator

from watcher.config.base import A_YEAR_MS, A_YEAR_S, OptionalText, Section
from watcher.config.listen import METRICS_EXAMPLE, split_listen


class InboxConfig(Section):
    """Finding frames, and deciding when they are complete."""

    mode: Literal["auto", "events", "poll"] = Field(
        "auto",
        description="How new frames are noticed: `events` (inotify, plus the periodic rescan "
        "below), `poll` (a full scan every poll_scan_s: network shares deliver no inotify events), "
        "or `auto` (poll when the inbox is on NFS, CIFS/SMB, FUSE and the like, else events).",
    )
    poll_scan_s: float = Field(
        2.0, gt=0, le=A_YEAR_S, description="In poll mode, the inbox is scanned this often."
    )
    settle_ms: int = Field(
        1000,
        ge=0,
        le=A_YEAR_MS,
        description="A complete frame (its BMP header's declared size is present) must also be "
        "unchanged for this long before it is read, so a writer that is still busy is never read "
        "early.",
    )
    readiness_timeout_s: float = Field(
        300.0,
        gt=0,
        le=A_YEAR_S,
        description="A frame still incomplete with no writes for this long is given up: it goes to "
        "failed/ with the reason `truncated`.",
    )
    rescan_interval_s: float = Field(
        30.0,
        gt=0,
        le=A_YEAR_S,
        description="Events from the filesystem are only hints: the whole inbox is rescanned this often.",
    )
    poll_interval_ms: int = Field(
        250,
        gt=0,
        le=A_YEAR_MS,
        description="How often frames that are still being written are looked at again.",
    )
    # Pillow itself refuses images over 2 × its MAX_IMAGE_PIXELS (178,956,970) when opening them.
    max_pixels: int = Field(
        40_000_000,
        gt=0,
        le=178_956_970,
        description="Frames with more pixels than this are refused before decoding (decompression "
        "bombs); at most 178956970, where Pillow refuses them itself.",
    )
    # A huge or sparse file must not cost the daemon its memory.
    max_file_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        le=2**40,
        description="Files larger than this (bytes) are refused before they are read, as are files "
        "far larger than their BMP header declares (a sparse or padded file): reason "
        "`too large: ...`.",
    )
    remove_empty_folders_after_s: float = Field(
        0.0,
        ge=0,
        le=A_YEAR_S,
        description="A folder below a camera's own (an exporter's hour or day folder) that a rescan "
        "finds empty, and that has stayed so this long (by its time, and by the daemon's own rescans since "
        "it started), is removed, so that months of them do not "
        "pile up as watches and listings; 0 keeps every folder. Only where writers write into new "
        "folders: one that comes back to an old one would find it gone (or, making it again with "
        "mkdir -p just as a rescan removes it, fail that one file). An unmounted share's mount "
        "point is an empty folder too, removed once unmounted that long: keep mount points at the inbox "
        "or a camera's own folder.",
    )


class BatchConfig(Section):
    """Frames sent through the model together."""

    size: int = Field(
        32,
        ge=1,
        le=4096,
        description="Frames sent through CLIP together: a batch is flushed when it has this many "
        "frames, or when its oldest frame has waited max_wait_ms, whichever comes first.",
    )
    max_wait_ms: int = Field(
        500,
        ge=0,
        le=A_YEAR_MS,
        description="How long the oldest frame of a partial batch waits before the batch is flushed anyway.",
    )
    decode_workers: int = Field(
        0,
        ge=0,
        le=256,
        description="Threads that read, hash and decode frames beside the model; 0 means one per CPU core.",
    )

    file_processes: int | Literal["auto"] = Field(
        "auto",
        description="Processes that read frames and move them, so file handling uses every core "
        "(on a GPU it, not the model, is the limit); `auto` is one per core but one with the model "
        "on a GPU and none on a CPU (where the model needs the cores), 0 is none.",
    )

    gpu_lanes: int = Field(
        3,
        ge=2,
        le=16,
        description="Batches in flight at once with the model on a GPU, their stages overlapping "
        "(reading, the model, the commit and the moves). With file processes two arenas of size × "
        "1 MiB in /dev/shm serve them all (one with two lanes), page-locked (where /dev/shm cannot "
        "hold them the file work stays on threads, with a warning): a batch holds one only while its "
        "frames are read and copied to the GPU. Each lane keeps its own CUDA stream and its frames "
        "on the GPU. Not used on a CPU.",
    )

    gil_switch_interval_ms: float = Field(
        5.0,
        ge=0.01,  # Python takes anything under a microsecond as one
        le=100,
        description="How long one of the daemon's threads may keep running Python while another "
        "waits to resume (Python's switch interval; 5, Python's own, by default). Every GPU launch "
        "and file system call gives Python's lock up and waits up to this long to take it back: "
        "0.5 let the model stage resume sooner beside busy threads on a GPU, but moved no frames/s "
        "end to end there and cost the daemon about 5% more CPU on a CPU.",
    )

    @field_validator("file_processes")
    @classmethod
    def _process_count(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 256:
            raise ValueError("must be 'auto' or a number from 0 to 256")
        return value

    @property
    def decode_threads(self) -> int:
        return self.decode_workers or os.cpu_count() or 1

    def file_process_count(self, *, on_accelerator: bool) -> int:
        if self.file_processes != "auto":
            return self.file_processes
        return max(1, (os.cpu_count() or 1) - 1) if on_accelerator else 0


class MetricsConfig(Section):
    """Prometheus metrics."""

    listen: OptionalText = Field(
        None,
        description="Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9464; not set "
        "switches them off.",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                split_listen(value, example=METRICS_EXAMPLE)
            except ValueError as error:
                raise ValueError(f"{error}, or left out to switch metrics off") from None
        return value


class StatusConfig(Section):
    """What `cctv-gender status` calls unhealthy."""

    stall_after_s: float = Field(
        300.0,
        gt=0,
        le=A_YEAR_S,
        description="`cctv-gender status` exits 1 (unhealthy) when frames are waiting and nothing "
        "has been processed for this long.",
    )


class LoggingConfig(Section):
    """The daemon's log."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="`debug` (a line per frame), `info` (a line per batch), `warning` or `error`.",
    )
