"""`run_folder.FolderLock`: one writer per folder. A second process on a folder that `finetune`,
`evaluate`, `study` or `lambda-search` writes is refused in one line naming the holder; a killed holder
blocks nothing; a dead holder's note is never shown as a live holder."""

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager

import pytest

from conftest import finetune_argv, one_line_error
from ldifs_hf.run_folder import FolderBusyError, FolderLock, describe_holder, read_holder
from ldifs_hf.run_folder.lock import HOLDER_FILE, LOCK_FILE

LOCK_MODULE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ldifs_hf", "run_folder", "lock.py")
# Another process holding a folder: the lock module alone (no torch to import), so it starts in a blink.
HOLDER = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("lock", {LOCK_MODULE!r})
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
with lock.FolderLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""

# Another process trying to take a folder: prints "busy" or "taken".
TAKER = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("lock", {LOCK_MODULE!r})
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
try:
    with lock.FolderLock(sys.argv[1]):
        print("taken")
except lock.FolderBusyError:
    print("busy")
"""


@contextmanager
def held_by_another_process(folder):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        if process.poll() is None:
            process.stdin.close()
            process.wait(timeout=30)


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    folder = tmp_path / "run"
    with held_by_another_process(folder) as holder:
        with pytest.raises(FolderBusyError) as refused:
            with FolderLock(folder):
                pytest.fail("two writers held one folder")
        message = str(refused.value)
        assert message.startswith(f"output_dir {str(folder)!r} is being written by pid {holder.pid} on {socket.gethostname()} (")
        assert "\n" not in message
        holder.send_signal(signal.SIGKILL)  # a crash: no release, the files stay
        holder.wait(timeout=30)
    assert sorted(os.listdir(folder)) == [LOCK_FILE, HOLDER_FILE]
    # The dead holder's note does not pass for a live holder.
    assert describe_holder(str(folder)).startswith("another process that has just started (the holder note still names pid")
    with FolderLock(folder):  # the OS released the dead process's lock
        assert read_holder(str(folder))["pid"] == os.getpid()
    assert os.listdir(folder) == []  # a clean release removes both files


def test_the_lock_is_reentrant_in_one_process_and_a_folder_it_made_goes_when_empty(tmp_path):
    folder = tmp_path / "new"
    with FolderLock(folder):
        with FolderLock(folder):  # e.g. a command that calls another on the same folder
            pass
        assert read_holder(str(folder))["pid"] == os.getpid()  # still held after the inner release
    assert not folder.exists()  # nothing was written: a refused command leaves nothing behind
    with FolderLock(folder):
        (folder / "result.txt").write_text("kept")
    assert os.listdir(folder) == ["result.txt"]


def test_a_forked_child_leaving_the_block_keeps_the_parents_lock(tmp_path):
    folder = tmp_path / "run"
    held = FolderLock(folder)
    with held:
        pid = os.fork()
        if pid == 0:  # what a SystemExit raised in a forked child (a DataLoader worker, say) would do
            try:
                held.__exit__(None, None, None)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert sorted(os.listdir(folder)) == [LOCK_FILE, HOLDER_FILE]
        taker = subprocess.run([sys.executable, "-c", TAKER, str(folder)], capture_output=True, text=True, timeout=60)
        assert taker.stdout.strip() == "busy", taker.stderr[-2000:]


def test_a_file_is_not_taken_for_a_folder(tmp_path):
    (tmp_path / "a-file").write_text("the user's")
    with pytest.raises(FileExistsError, match=f"output_dir {str(tmp_path / 'a-file')!r} is a file, not a folder"):
        with FolderLock(tmp_path / "a-file"):
            pass
    assert (tmp_path / "a-file").read_text() == "the user's"


def test_finetune_on_a_folder_another_process_writes_is_one_line(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    out = tmp_path / "run"
    with held_by_another_process(out) as holder:
        line = one_line_error(capsys, ["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce")])
        assert f"output_dir {str(out)!r} is being written by pid {holder.pid}" in line
        assert sorted(os.listdir(out)) == [LOCK_FILE, HOLDER_FILE]  # nothing of a run was written


def test_evaluate_on_a_report_folder_another_process_writes_is_one_line(tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / "report"
    with held_by_another_process(out) as holder:
        line = one_line_error(capsys, ["evaluate", "--checkpoint", str(tiny_clip_dir), "--datasets", "mnist", "--output_dir", str(out)])
        assert f"is being written by pid {holder.pid}" in line


def test_study_on_a_folder_another_process_writes_is_refused_before_its_world(tmp_path, capsys, monkeypatch):
    import ldifs_hf.study.runner as runner

    monkeypatch.setattr(runner, "prepare_study", lambda *a, **k: pytest.fail("the study prepared its world before refusing"))
    out = tmp_path / "study"
    with held_by_another_process(out) as holder:
        argv = ["study", "--output_dir", str(out), "--world", "quick", "--methods", "zs-init-ce", "--finetune_tasks", "world-digit"]
        assert f"is being written by pid {holder.pid}" in one_line_error(capsys, argv)


def test_demo_on_a_folder_another_process_writes_is_refused_before_its_world(tmp_path, capsys, monkeypatch):
    """The demo is a study: it holds its folder as the study does (before, two demos wrote into one folder)."""
    import ldifs_hf.study.runner as runner

    monkeypatch.setattr(runner, "prepare_study", lambda *a, **k: pytest.fail("the demo prepared its world before refusing"))
    out = tmp_path / "demo"
    with held_by_another_process(out) as holder:
        argv = ["demo", "--quick", "--output_dir", str(out), "--methods", "zs-init-ce", "--seeds", "0"]
        assert f"is being written by pid {holder.pid}" in one_line_error(capsys, argv)
        assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_FILE, HOLDER_FILE])  # the demo wrote nothing


def test_lambda_search_on_a_folder_another_process_writes_is_one_line(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    out = tmp_path / "search"
    with held_by_another_process(out) as holder:
        argv = ["lambda-search", *finetune_argv(tiny_clip_dir, eurosat_dir, out, "lp-init-ldifs"), "--validation_fraction", "0.25", "--lambda_grid", "0.1,10"]
        assert f"is being written by pid {holder.pid}" in one_line_error(capsys, argv)
