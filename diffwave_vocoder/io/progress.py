"""One progress line (tqdm), redrawn in place on a terminal and printed as a new line every
`interval` seconds otherwise (log files, CI), for batch vocoding and training alike."""
from __future__ import annotations

import re
import sys
from typing import Any, TextIO

from tqdm import tqdm

_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines:
    """A stream for tqdm that turns each redraw ('\\r' + line) into a line of its own and drops
    what only moves the cursor or blanks the line."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        text = _CURSOR_MOVES.sub("", text.replace("\r", "")).strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_line(total: float | None, stream: TextIO | None = None, interval: float = 30.0, **options: Any) -> tqdm:
    """A tqdm bar on `stream` (default stderr): on a terminal redrawn at most 4 times a second, otherwise
    printed at most every `interval` seconds (and at the end)."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    return tqdm(total=total, file=stream if tty else _Lines(stream), mininterval=0.25 if tty else interval,
                maxinterval=max(interval, 10.0), dynamic_ncols=tty, ascii=not tty, **options)
