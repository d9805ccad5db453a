"""Where a long job's output goes: the demo and the study show their phases, one progress bar per
phase, one line per finished run and their tables, while each run's own output (the Trainer's log,
transformers' and datasets' logging and progress bars, third-party warnings) goes to a log file in the
run's folder; a phase's own bar inside such a block writes to `console_stream()`.

    with phase_bar(len(runs), "fine-tuning", verbose=args.verbose) as bar:
        for run in runs:
            with run_output(run.folder, verbose=args.verbose):
                record = finetune(...)
            finished(bar, f"{run.name}: {record.results}")

`verbose` leaves everything on the console, as a single `ldifs-hf finetune` does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from typing import Iterator, TextIO

LOG_FILE = "output.log"
# The console's standard error outside each `run_output` block in progress, innermost last.
_CONSOLES: list[TextIO] = []


def console_stream() -> TextIO:
    """Where a phase's own progress bar goes: the console, also within a `run_output` block."""
    return _CONSOLES[-1] if _CONSOLES else sys.stderr


@contextlib.contextmanager
def run_output(folder: str | os.PathLike, *, verbose: bool = False) -> Iterator[TextIO | None]:
    """Within the block, standard output, standard error and every logging handler that writes to them
    go to `folder`/output.log (appended: a resumed run keeps its earlier log); yields the file, or
    None with `verbose`, which changes nothing."""
    if verbose:
        yield None
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOG_FILE), "a", encoding="utf-8") as log:
        # Handlers hold the stream they were made with (transformers' and basicConfig's hold the stderr of
        # that moment), so redirecting sys.stderr alone would leave them on the console: point them at
        # the file too.
        handlers = _stream_handlers()
        streams = [_point(h, log) for h in handlers]
        console = sys.stderr
        _CONSOLES.append(console)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield log
        finally:
            _CONSOLES.pop()
            for handler, stream in zip(handlers, streams):
                _point(handler, stream)
            # A handler made within the block (transformers makes its own on first use) took the file
            # for standard error: it outlives the file, so it gets the console's.
            for handler in _stream_handlers():
                if handler.stream is log:
                    _point(handler, console)


def phase_bar(total: int, what: str, *, verbose: bool = False):
    """A phase's one progress bar, on standard error (none with `verbose`, where each run shows its own)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit="run", disable=verbose, file=console_stream(), leave=False)


def finished(bar, line: str) -> None:
    """One line on standard output for a finished run, above its phase's bar; the bar moves on."""
    bar.write(line, file=sys.stdout)
    bar.update()


def _point(handler: logging.StreamHandler, stream):
    """Point `handler` at `stream`; returns the stream it had. Unlike `setStream`, a closed stream (a
    handler left over from a finished test's capture) is not flushed: that would raise."""
    with handler.lock:
        previous = handler.stream
        if hasattr(previous, "flush") and not getattr(previous, "closed", False):
            previous.flush()
        handler.stream = stream
    return previous


def _stream_handlers() -> list[logging.StreamHandler]:
    """Every handler of the root logger and of the named loggers that writes to a console-like stream,
    each once: not a file's, not an in-memory buffer's (a test's log capture)."""
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    handlers = {
        id(handler): handler for logger in loggers for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        and handler.stream is not None and not isinstance(handler.stream, io.StringIO)
        # A handler whose stream is a property (logging's last resort) follows sys.stderr by itself.
        and not isinstance(getattr(type(handler), "stream", None), property)
    }
    return list(handlers.values())
