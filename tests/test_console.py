"""`console.run_output`: a run's output (prints, warnings, logging through the console handlers, the
loggers transformers and datasets set up, progress bars) goes to the run folder's log file; `verbose`
leaves it on the console; the console is restored afterwards."""

import json
import subprocess
import sys

from ldifs_hf.console import LOG_FILE, finished, phase_bar, run_output

# In a fresh interpreter, as the CLI runs: transformers' handler and basicConfig's hold the real stderr
# (under pytest they would hold pytest's capture streams).
PROBE = """
import json, logging, sys, warnings
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging
from ldifs_hf.console import run_output

logging.basicConfig(level=logging.INFO)
hf_logging.set_verbosity_warning()
warnings.simplefilter("always")

def everything_a_run_writes(tag):
    print("print", tag)
    print("stderr", tag, file=sys.stderr)
    warnings.warn("warning " + tag)
    logging.getLogger("ldifs_hf.some_module").warning("ours %s", tag)
    hf_logging.get_logger("transformers.some_module").warning("transformers %s", tag)
    for _ in tqdm(range(3), desc="bar " + tag):
        pass

with run_output(sys.argv[1]) as log:
    everything_a_run_writes("quiet")
    made_within = logging.StreamHandler()  # as transformers makes its own on first use: on the file's stderr
    logging.getLogger("ldifs_hf.made_within").addHandler(made_within)
    logging.getLogger("ldifs_hf.made_within").warning("made within quiet")
logging.getLogger("ldifs_hf.made_within").warning("made within loud")  # the file is closed: the console's
closed = log.closed
everything_a_run_writes("loud")
with run_output(sys.argv[1]):
    print("second")
print(json.dumps({"closed": closed}))
"""


def test_run_output_goes_to_the_log_file_and_the_console_comes_back(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"closed": True}
    console = done.stdout + done.stderr
    assert "quiet" not in console and "Logging error" not in console
    written = (tmp_path / "run" / LOG_FILE).read_text()
    for line in ("print quiet", "stderr quiet", "warning quiet", "ours quiet", "transformers quiet", "bar quiet", "made within quiet"):
        assert line in written, line
    # After the block the console is the console again; a second block appends to the same file.
    for line in ("print loud", "stderr loud", "warning loud", "ours loud", "transformers loud", "bar loud", "made within loud"):
        assert line in console and line not in written, line
    assert written.endswith("second\n") and written.count("second") == 1


def test_verbose_leaves_everything_on_the_console(tmp_path, capfd):
    with run_output(tmp_path / "run", verbose=True) as log:
        print("shown")
    assert log is None and "shown" in capfd.readouterr().out
    assert not (tmp_path / "run").exists()


def test_a_phase_prints_one_line_per_finished_run(capfd):
    with phase_bar(2, "fine-tuning") as bar:
        finished(bar, "run a: done")
        finished(bar, "run b: done")
        assert bar.n == 2
    out = capfd.readouterr().out
    assert out.splitlines() == ["run a: done", "run b: done"]


# `ldifs-hf study --world quick` up to its cells, as the CLI runs it: the world's preparation (pre-training the tiny
# CLIP, saving it) and what it imports (DeepSpeed's accelerator warning, transformers' notices and progress bars)
# write to the study's log; the console keeps our lines and the pre-training's own bar.
STUDY_PROBE = """
import sys
from ldifs_hf import cli
from ldifs_hf.study import runner

def stop(*args, **kwargs):
    raise SystemExit(0)
runner.plan_study = stop  # the cells are not this test's
cli.main(["study", "--world", "quick", "--world_cache_dir", sys.argv[1], "--output_dir", sys.argv[2]])
"""


def test_the_studys_preparation_writes_third_party_output_to_its_log(tmp_path):
    done = subprocess.run([sys.executable, "-c", STUDY_PROBE, str(tmp_path / "cache"), str(tmp_path / "study")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line.strip() for line in (done.stdout + done.stderr).replace("\r", "\n").splitlines() if line.strip()]
    assert console[0].startswith("preparing the concept world") and len(console) > 1
    assert all(line.startswith("pre-training world CLIP:") for line in console[1:]), console
    written = (tmp_path / "study" / LOG_FILE).read_text()
    assert "building the world CLIP into" in written and "Writing model shards" in written
