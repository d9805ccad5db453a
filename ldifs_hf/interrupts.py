"""Ctrl-C (SIGINT) and SIGTERM end a command with one line and the shell's exit code, 128 + the signal
(130 / 143), never a traceback.

Python turns SIGINT into KeyboardInterrupt but lets SIGTERM kill the process on the spot, with no
`finally` blocks, no closed files and an exit status the shell reports as 143 without a word. Here
SIGTERM raises like Ctrl-C, so both unwind the same way (one raised inside a `__del__`, where Python
would print and drop it, is delivered again): files being written are closed by their
`with` blocks, and what a command keeps across runs is whatever was complete before the signal (a run
resumes from its last complete checkpoint; a half-written one is skipped as incomplete; the
evaluation cache only ever holds whole entries). Progress bars left mid-line are closed first, also
one caught half-built by the signal (its close would raise AttributeError: the traceback Ctrl-C
during a study used to print).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
REDELIVERY_DELAY_S = 0.05


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (so code that cleans up after
    an interruption does it for both)."""

    signum = signal.SIGTERM


def run_interruptible(command: Callable[[], int]) -> int:
    """`command()`'s exit code; if SIGINT or SIGTERM arrives, one line on stderr and 128 + the signal."""
    in_main_thread = threading.current_thread() is threading.main_thread()  # handlers can be set only there
    if in_main_thread:
        previous = {signum: signal.getsignal(signum) for signum in SIGNAL_NAMES}
        signal.signal(signal.SIGTERM, _raise_terminated)
        previous_hook = sys.unraisablehook
        sys.unraisablehook = redelivering = _Redelivering(previous_hook)
    try:
        return command()
    except KeyboardInterrupt as interruption:
        signum = getattr(interruption, "signum", signal.SIGINT)
        if in_main_thread:  # a second signal while the line is written would print a traceback after it
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bars_closed = close_progress_bars()
        print(
            ("\n" if bars_closed else "") + f"error: interrupted by {SIGNAL_NAMES[signum]}; "
            "run the same command again to continue from what was complete",
            file=sys.stderr,
        )
        return 128 + signum
    finally:
        if in_main_thread:
            for number, handler in previous.items():
                signal.signal(number, handler)
            sys.unraisablehook = previous_hook
            redelivering.cancel()  # the command has ended: nothing is left to interrupt


def _raise_terminated(signum, frame):
    raise Terminated()


class _Redelivering:
    """An unraisable-exception hook that sends an interruption raised inside a `__del__` (e.g. a data
    loader shutting down its workers) to the process again, so that it is raised in the command's code.
    Python only prints such an exception and goes on, so the command would otherwise run to its end
    and exit 0 with a traceback in its output."""

    def __init__(self, previous_hook):
        self.previous_hook = previous_hook
        self.timers: list[threading.Timer] = []

    def __call__(self, unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            self.previous_hook(unraisable)
            return
        # Sent from another thread a moment later: sent now, it would be raised inside this hook,
        # where Python drops it too.
        signum = getattr(unraisable.exc_value, "signum", signal.SIGINT)
        timer = threading.Timer(REDELIVERY_DELAY_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def cancel(self) -> None:
        for timer in self.timers:
            timer.cancel()


def close_progress_bars() -> int:
    """Close every open tqdm bar (so the next line starts at the left); returns how many there were.

    A bar interrupted inside its constructor is registered but lacks the attributes `close` reads; it
    is marked disabled instead, which also keeps its `__del__` from printing an AttributeError."""
    from tqdm import tqdm

    bars = list(getattr(tqdm, "_instances", ()))
    for bar in bars:
        try:
            bar.close()
        except AttributeError:
            bar.disable = True
            tqdm._instances.discard(bar)
    return len(bars)
