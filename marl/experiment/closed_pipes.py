"""Console output that survives a dead reader (``run_marl.py ... | tee log``, then Ctrl-C).

Ctrl-C reaches ``tee`` as well and kills it; the run itself goes on to save
its checkpoint. Python ignores SIGPIPE, so its next write to the pipe raises
`BrokenPipeError`, and even a failed flush at exit turns the exit status
into 120. Here the first EPIPE points the stream's file descriptor at
``os.devnull``: console output is dropped from then on, and nothing else
(the checkpoint, the exit code) depends on it.
"""
from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, TextIO


class DropWhenClosed:
    """Wraps a text stream; after a `BrokenPipeError` every write is dropped.

    Anything else (``isatty``, ``encoding``, ``fileno``, ...) is the wrapped
    stream's, so rich and tqdm treat it as the stream itself.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_reader = False

    def write(self, text: str) -> int:
        if not self.closed_reader:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop_from_now_on()
        return len(text)

    def flush(self) -> None:
        if not self.closed_reader:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop_from_now_on()

    def isatty(self) -> bool:
        return not self.closed_reader and self._stream.isatty()

    def _drop_from_now_on(self) -> None:
        self.closed_reader = True
        # Text still buffered in the wrapped stream is flushed again at exit; with the
        # descriptor on /dev/null that flush succeeds instead of setting exit status 120.
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def tolerate_closed_pipes() -> Iterator[None]:
    """Inside the block, ``sys.stdout`` and ``sys.stderr`` drop output once their reader is gone.

    The original streams are put back on exit (after a final flush), so an
    in-process caller keeps its own streams.
    """
    original = sys.stdout, sys.stderr
    wrapped = [DropWhenClosed(s) if s is not None else None for s in original]  # None: no console at all
    sys.stdout, sys.stderr = wrapped
    try:
        yield
    finally:
        for stream in wrapped:
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):  # a stream closed under us: nothing left to save
                pass
        sys.stdout, sys.stderr = original
