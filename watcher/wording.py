"""Counts in words for people: "1 frame", "3 frames", "1 batch", "2 batches" (command output,
status text, log lines). Any layer may use it; it imports nothing."""

from __future__ import annotations


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """The count and its noun, singular for exactly 1 (`plural(1, "CPU thread")` is "1 CPU thread").

    The plural adds "es" after s, x, ch and sh ("batches", "crashes"), otherwise "s"; pass
    `plural_noun` for any other ("1 was", "2 were" is `plural(n, "was", "were")`).
    """
    return f"{count} {noun if count == 1 else plural_noun or _plural(noun)}"


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
