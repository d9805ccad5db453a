"""Ctrl-C (SIGINT) and SIGTERM end a command with one line and exit code 130 / 143, no traceback; the
run keeps its complete checkpoints and the same command continues it."""

import gc
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from tqdm import tqdm

from ldifs_hf.cli import main
from ldifs_hf.evaluation.checkpoints import checkpoint_problem
from ldifs_hf.interrupts import Terminated, close_progress_bars, run_interruptible
from ldifs_hf.records import RunRecord
from conftest import finetune_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ctrl_c_is_one_line_and_exit_code_130(capsys):
    def command():
        raise KeyboardInterrupt

    assert run_interruptible(command) == 130
    assert capsys.readouterr().err == "error: interrupted by Ctrl-C (SIGINT); run the same command again to continue from what was complete\n"


def test_sigterm_raises_like_ctrl_c_and_is_exit_code_143(capsys):
    reached = []

    def command():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises in this thread before the sleep ends
        finally:
            reached.append("finally")  # clean-up code runs, unlike under SIGTERM's default action
        return 0

    assert run_interruptible(command) == 143
    assert reached == ["finally"]
    assert capsys.readouterr().err == "error: interrupted by SIGTERM; run the same command again to continue from what was complete\n"
    assert issubclass(Terminated, KeyboardInterrupt)


class _SignalledWhileCollected:
    def __init__(self, signum):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)
        time.sleep(1)  # the interruption is raised here, inside __del__, where Python drops it


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interruption_raised_inside_a_destructor_still_stops_the_command(capsys, signum, code):
    unraisable = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    finished = []

    def command():
        collected = _SignalledWhileCollected(signum)
        del collected  # e.g. a data loader's iterator, shutting down its workers
        time.sleep(10)
        finished.append(True)
        return 0

    started = time.monotonic()
    try:
        assert run_interruptible(command) == code
    finally:
        sys.unraisablehook = previous_hook
    assert time.monotonic() - started < 8 and finished == [] and unraisable == []
    assert sys.unraisablehook is previous_hook
    assert capsys.readouterr().err.startswith("error: interrupted by ")


def test_signal_handlers_are_restored_afterwards():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert run_interruptible(lambda: 0) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before

    def interrupted():
        raise KeyboardInterrupt

    assert run_interruptible(interrupted) == 130
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_progress_bar_caught_half_built_is_closed_without_an_attribute_error(capsys):
    unraisable = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append  # where tqdm's __del__ error would go

    def command():
        # Registered with tqdm, but the signal came in __init__ after `disable` and before `pos`: its close
        # (and so its __del__) raises AttributeError. The interrupted frame keeps it alive until handled.
        half_built = tqdm.__new__(tqdm)
        half_built.disable = False
        running = tqdm(total=3, desc="benchmarks")
        running.update(1)
        raise KeyboardInterrupt

    try:
        assert run_interruptible(command) == 130
        gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    assert unraisable == []
    err = capsys.readouterr().err
    assert err.endswith("\nerror: interrupted by Ctrl-C (SIGINT); run the same command again to continue from what was complete\n")
    assert "Traceback" not in err and close_progress_bars() == 0


# -- a real run, signalled mid-training ---------------------------------------------------------------


def _finetune_argv(tiny_clip_dir, eurosat_dir, out):
    return [
        "finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-l2sp", "--max_steps", "24", "--save_strategy", "steps",
                                   "--save_steps", "2", "--disable_tqdm", "false", "--log_level", "info"),
    ]


def _wait_for_complete_checkpoint(out, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit code {proc.returncode}) before its first checkpoint")
        if (out / "checkpoint-2").is_dir() and checkpoint_problem(str(out / "checkpoint-2")) is None:
            return
        time.sleep(0.1)
    pytest.fail("no complete checkpoint-2 within the time limit")


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "Ctrl-C (SIGINT)"), (signal.SIGTERM, 143, "SIGTERM")])
def test_finetune_signalled_mid_training_ends_in_one_line_and_the_same_command_continues(
    tiny_clip_dir, eurosat_dir, tmp_path, caplog, signum, code, name
):
    out = tmp_path / "run"
    argv = _finetune_argv(tiny_clip_dir, eurosat_dir, out)
    env = {**os.environ, "PYTHONPATH": ROOT}
    with open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "ldifs_hf", *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        try:
            _wait_for_complete_checkpoint(out, proc)
            proc.send_signal(signum)
            assert proc.wait(timeout=120) == code
        finally:
            if proc.poll() is None:
                proc.kill()
    err = (tmp_path / "stderr").read_text()
    assert "Traceback" not in err and "Exception ignored" not in err
    last = err.rstrip("\n").split("\n")[-1]
    assert last == f"error: interrupted by {name}; run the same command again to continue from what was complete"
    assert not RunRecord.load(out).completed  # stopped mid-run
    assert checkpoint_problem(str(out / "checkpoint-2")) is None  # the complete checkpoint is kept

    with caplog.at_level(logging.INFO, logger="ldifs_hf"):
        assert main(argv) == 0
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("continuing from")]
    assert len(resumed) == 1 and os.path.basename(resumed[0].split()[-1]).startswith("checkpoint-")
    assert RunRecord.load(out).completed
