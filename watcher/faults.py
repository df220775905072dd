"""Named kill points in a frame's life, for the fault-injection tests.

Set `CCTV_GENDER_KILL_AT=<step>` (or `<step>:<n>`, the n-th time the step is reached) and the
process SIGKILLs itself there: no special build, nothing happens when the variable is unset.
Steps: claimed, decoded, inferred, committed, linked (a frame's new name made, its old one not
yet removed), moved.

`CCTV_GENDER_KILL_ON_FRAME=<file name>` makes a poison input of one frame: the process SIGKILLs
itself whenever it has read a frame of that name, on every run, as a frame that crashes a decoder
would (the crash-loop breaker's tests use it).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import PurePosixPath

KILL_ENV = "CCTV_GENDER_KILL_AT"
POISON_ENV = "CCTV_GENDER_KILL_ON_FRAME"
STEPS = ("claimed", "decoded", "inferred", "committed", "linked", "moved")

_reached: Counter[str] = Counter()


def kill_point(step: str) -> None:
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name != step:
        return
    _reached[step] += 1
    if _reached[step] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def kill_on_frame(relative: PurePosixPath) -> None:
    poison = os.environ.get(POISON_ENV)
    if poison and relative.name == poison:
        os.kill(os.getpid(), signal.SIGKILL)
