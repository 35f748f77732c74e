"""Progress bars on stderr (tqdm), shown by default only when stderr is a terminal.

``show_progress=None`` (the default of ``LLM`` and the CLI) means "when stderr is a TTY":
an interactive user sees model loading and benchmark progress as with vLLM or mlx-lm,
while logs, pipes, CI and servers under a supervisor get no carriage-return noise.
``True``/``False`` force it either way.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


def progress_enabled(show: bool | None, file=None) -> bool:
    if show is not None:
        return bool(show)
    stream = file or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress_bar(*, total: int | None, desc: str, unit: str = "it", enabled: bool | None = None,
                 file=None) -> Iterator:
    """A tqdm bar on ``file`` (stderr), or an object with the same methods doing nothing."""
    if not progress_enabled(enabled, file):
        yield _NoBar()
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=file or sys.stderr, leave=False, dynamic_ncols=True,
               mininterval=0.2)
    try:
        yield bar
    finally:
        bar.close()
