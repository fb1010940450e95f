"""Stopping a training run cleanly on Ctrl-C (SIGINT) or SIGTERM.

The first signal is deferred: it only asks the training loop to stop once
the iteration in progress has finished, so the checkpoint the loop then saves
holds whole iterations and agrees with ``metrics.jsonl``. A second signal
stops at once: `ForcedStop` is raised wherever the main thread is, and the
caller saves nothing more (the checkpoint already on disk stays as it was).

Exit codes follow the shell's convention, 128 + the signal number: 130 for
SIGINT, 143 for SIGTERM.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional

#: The signals a run handles; both mean "stop, keeping what is finished".
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The shell's exit status of a process stopped by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class ForcedStop(KeyboardInterrupt):
    """A second stop signal: leave now, saving nothing.

    A `KeyboardInterrupt`, so code that cleans up after Ctrl-C does so here too.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"second {signal_name(signum)}: stopped at once")
        self.signum = signum
        #: What the stop left on disk, filled in by whoever knows (for the final message).
        self.detail: Optional[str] = None

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


class StopRequest:
    """What the handler recorded: the first stop signal, if one came."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal_name(self.signum) if self.signum is not None else "none"

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum) if self.signum is not None else 0


def _tell(message: str) -> None:
    """Write to fd 2 directly: a signal handler must not re-enter a buffered stream
    (it may have interrupted a write to it), and a closed stderr is no reason to fail."""
    try:
        os.write(2, message.encode(errors="replace"))
    except OSError:
        pass


@contextmanager
def deferred_stop(what: str = "the current iteration") -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM in the ``with`` block as "stop after ``what``".

    The first signal sets the yielded `StopRequest` (the caller polls it
    between iterations) and prints a one-line note to stderr; any further
    signal raises `ForcedStop`. The previous handlers are restored on exit.

    Nothing is installed outside the main thread (Python only delivers
    signals there), nor for a signal whose handler was set outside Python or
    is ``SIG_IGN`` (a job that a script started with ``&`` keeps ignoring
    Ctrl-C); such signals keep their old behaviour.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request.signum is None:
            request.signum = signum
            name = signal_name(signum)
            _tell(f"\n{name} received: stopping after {what} finishes, then saving a checkpoint "
                  f"({name} again stops at once without saving)\n")
            return
        raise ForcedStop(signum)

    previous: Dict[int, Callable] = {}
    try:
        for signum in STOP_SIGNALS:
            old = signal.getsignal(signum)
            if old is None or old == signal.SIG_IGN:
                continue
            previous[signum] = old
            signal.signal(signum, handler)
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
