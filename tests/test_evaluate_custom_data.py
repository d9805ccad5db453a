"""`ldifs-hf evaluate` on local data whose columns are not image/label: each local dataset takes its
image and label columns ('name=column', as finetune's --image_column/--label_column), and a run
fine-tuned on its own data ("custom") gets its A_FT scored on that data, read from the path and
columns its record holds; neither its cards nor the export `--push_to_hub` uploads name a local path."""

import json

import datasets
import pytest

from ldifs_hf.cli import main
from ldifs_hf.records import RunRecord
from ldifs_hf.testing import save_benchmark_like_dataset

from conftest import finetune_argv


@pytest.fixture(scope="module")
def renamed_dir(tmp_path_factory):
    """EuroSAT-like data (16 train, 8 test) whose columns are 'img' and 'fine_label'."""
    source = save_benchmark_like_dataset("eurosat", tmp_path_factory.mktemp("source"), num_train=16, num_test=8)
    renamed = datasets.load_from_disk(source).rename_columns({"image": "img", "label": "fine_label"})
    path = tmp_path_factory.mktemp("renamed") / "my-data"
    renamed.save_to_disk(str(path))
    return str(path)


def _evaluate(tiny_clip_dir, out, *extra):
    return ["evaluate", "--pretrained", str(tiny_clip_dir), "--output_dir", str(out), "--lp_iterations", "5",
            "--num_workers", "0", "--device", "cpu", "--distances", "false", *extra]


def _error_line(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


def test_a_local_dataset_takes_its_image_and_label_columns(tiny_clip_dir, renamed_dir, tmp_path, capsys):
    checkpoint = ["--checkpoint", str(tiny_clip_dir)]
    # Without the columns: one line naming the missing column and the columns there are.
    line = _error_line(capsys, _evaluate(tiny_clip_dir, tmp_path / "a", *checkpoint, "--datasets", f"mine={renamed_dir}"))
    assert "no column 'image'" in line and "img, fine_label" in line, line

    # Named per dataset, or bare for every name=path dataset.
    for flags in (["--image_column", "mine=img", "--label_column", "mine=fine_label"], ["--image_column", "img", "--label_column", "fine_label"]):
        out = tmp_path / flags[1].replace("=", "-")
        assert main(_evaluate(tiny_clip_dir, out, *checkpoint, "--datasets", f"mine={renamed_dir}", *flags)) == 0
        (record,) = json.loads((out / "results.json").read_text())["records"]
        assert record["status"] == "ok" and 0 <= record["eval"]["mine"]["zs_acc"] <= 1 and 0 <= record["eval"]["mine"]["lp_acc"] <= 1

    # A column for a dataset that is not evaluated is refused, not ignored.
    line = _error_line(capsys, _evaluate(tiny_clip_dir, tmp_path / "b", *checkpoint, "--datasets", f"mine={renamed_dir}",
                                         "--image_column", "mine=img", "--label_column", "theirs=fine_label"))
    assert line.startswith("error: --label_column names 'theirs', which --datasets does not evaluate (mine)"), line


def test_a_run_on_custom_data_gets_its_a_ft_scored_and_its_cards_name_no_local_path(tiny_clip_dir, renamed_dir, eurosat_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["finetune", *finetune_argv(tiny_clip_dir, renamed_dir, run, "lp-init-ce", "--dataset", "custom",
                                            "--image_column", "img", "--label_column", "fine_label")]) == 0
    recorded = RunRecord.load(run)
    assert recorded.dataset == "custom"
    assert (recorded.settings["dataset_path"], recorded.settings["image_column"], recorded.settings["label_column"]) == (renamed_dir, "img", "fine_label")

    # Scored on another benchmark: A_FT still comes from the run's own data, with its columns.
    out = tmp_path / "report"
    assert main(_evaluate(tiny_clip_dir, out, "--checkpoint", str(run), "--datasets", "eurosat",
                          "--dataset_path", f"eurosat={eurosat_dir}", "--include_intermediate", "false")) == 0
    (record,) = json.loads((out / "results.json").read_text())["records"]
    assert record["status"] == "ok" and record["finetune_task"] == "custom"
    assert isinstance(record["a_ft"], float) and 0 <= record["a_ft"] <= 1
    # The run measured A_FT on the same test split after training; the evaluation reads the same weights.
    assert record["a_ft"] == pytest.approx(recorded.results["test_accuracy"], abs=1e-6)
    a_ft_row = next(line for line in (out / "results.md").read_text().splitlines() if "A_FT" in line and line.startswith("| custom"))
    assert "–" not in a_ft_row, a_ft_row

    # The cards (the export's is what --push_to_hub uploads) name the local model and data by folder.
    for card in (run / "README.md", run / "clip" / "README.md"):
        text = card.read_text()
        assert str(tmp_path) not in text and str(tiny_clip_dir) not in text and renamed_dir not in text, card
        assert "local data (`my-data`)" in text and "a local model (`" in text
