"""Values the `finetune` command settles from what the user gave are in the arguments as parsed (no
argument object is changed afterwards): epochs the user gives replace the benchmark's."""

import json

import pytest

from ldifs_hf.cli import parse_finetune_args


def _parse(tmp_path, *extra):
    return parse_finetune_args(["--method", "zs-init-ce", "--dataset", "eurosat", "--output_dir", str(tmp_path / "run"), *extra])


@pytest.mark.parametrize("given", [(), ("--num_train_epochs", "3"), ("--num_train_epochs=3",)])
def test_epochs_from_the_command_line_replace_the_benchmarks(tmp_path, given):
    _, data_args, training_args = _parse(tmp_path, *given)
    assert data_args.epochs_from_benchmark is (not given)
    if given:
        assert training_args.num_train_epochs == 3


@pytest.mark.parametrize("given", [{}, {"num_train_epochs": 5}])
def test_epochs_from_a_config_file_replace_the_benchmarks(tmp_path, given):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"method": "zs-init-ce", "dataset": "eurosat", "output_dir": str(tmp_path / "run"), **given}))
    _, data_args, training_args = parse_finetune_args([str(config)])
    assert data_args.epochs_from_benchmark is (not given)
    assert training_args.num_train_epochs == given.get("num_train_epochs", 3)
