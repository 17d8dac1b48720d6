"""Messages on one line."""

from __future__ import annotations


def one_line(err: BaseException) -> str:
    """``err``'s message with its line breaks and runs of spaces made single
    spaces: the CLI prints each error as one line."""
    return " ".join(str(err).split())
