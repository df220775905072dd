"""Words for people: counts ("1 frame", "3 frames", "1 batch", "2 batches") and names that came
from outside (command output, status text, log lines). Any layer may use it; it imports nothing."""

from __future__ import annotations

# What a person reads for a frame dropped directly in the inbox (its camera is NULL): the
# dashboard's charts, the plot, the review grid and the command line's tables. Machine-readable
# output (CSV, JSON, the API) keeps the empty value, so that it cannot be taken for a folder's name.
NO_CAMERA = "(no camera)"


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """The count and its noun, singular for exactly 1 (`plural(1, "CPU thread")` is "1 CPU thread").

    The plural adds "es" after s, x, ch and sh ("batches", "crashes"), otherwise "s"; pass
    `plural_noun` for any other ("1 was", "2 were" is `plural(n, "was", "were")`).
    """
    return f"{count} {noun if count == 1 else plural_noun or _plural(noun)}"


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def shown(name: str) -> str:
    """A name the daemon did not choose (a camera folder's, a row's) as it may be printed: each
    character that is not printable (a control such as an escape sequence's ESC, a bidi override,
    a lone surrogate) written as in a Python string, `\\x1b`, so that a name cannot move the
    cursor, recolour a terminal or hide the text around it."""
    if name.isprintable():
        return name  # every camera name nearly, as it is
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in name)
