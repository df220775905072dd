"""Progress of a long step (features of a folder, epochs of a fit) that is never silent."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """A long step's progress, never silent: a tqdm bar when `stream` is a terminal; otherwise (a
    pipe, a log file, the journal) one plain line per `every` steps and one at the end, such as
    `epoch 20/200 (3 s): loss 0.4123, val loss 0.3981`. `every` defaults to a 20th of `total`."""

    def __init__(
        self, *, total: int, desc: str, unit: str = "", stream: TextIO | None = None, every: int = 0
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._total, self._desc, self._unit = total, desc, unit
        self._every = every or max(1, math.ceil(total / 20))
        self._done = self._reported = 0
        self._note = ""
        self._started = time.perf_counter()
        self._bar = (
            tqdm(total=total, desc=desc, unit=unit or "it", file=self._stream, dynamic_ncols=True)
            if _is_terminal(self._stream)
            else None
        )

    def advance(self, steps: int = 1, *, note: str = "") -> None:
        self._done += steps
        self._note = note
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(steps)
        elif self._done - self._reported >= self._every or self._done >= self._total:
            self._line()

    def close(self, *, note: str = "") -> None:
        """End the bar (or write the last step's line if it was not written), then `note`."""
        if self._bar is not None:
            self._bar.close()
        elif self._done > self._reported:
            self._line()
        if note:
            print(note, file=self._stream, flush=True)

    def _line(self) -> None:
        self._reported = self._done
        unit = f" {self._unit}" if self._unit else ""
        seconds = time.perf_counter() - self._started
        note = f": {self._note}" if self._note else ""
        print(
            f"{self._desc} {self._done}/{self._total}{unit} ({seconds:.0f} s){note}",
            file=self._stream,
            flush=True,
        )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
