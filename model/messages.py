"""One-line error texts for logs and refusals: an exception's message can run to pages (a
transformers or ONNX Runtime traceback), and the operator gets its first line."""

from __future__ import annotations


def first_line(error: BaseException, *, named: bool = False) -> str:
    """The first line of `error`'s message, or its type's name when the message is empty; with
    `named`, prefixed by the type's name (`RuntimeError: ...`)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return f"{type(error).__name__}: {line}" if named else line
