"""`EvaluatorSettings` is the one declaration of the evaluation settings: `ldifs-hf evaluate`, the study's
`--eval_*` and fine-tuning's `--forgetting_*` take their defaults, help and checks from it, and each
refusal names the flag the user typed."""

import dataclasses
import typing

import pytest

from ldifs_hf.evaluation.run import _SETTINGS, EvaluationArguments
from ldifs_hf.evaluation.settings import EvaluatorSettings
from ldifs_hf.study.arguments import EVALUATION_SETTINGS, StudyArguments
from ldifs_hf.training.arguments import DataArguments

SETTINGS = {f.name: f for f in dataclasses.fields(EvaluatorSettings)}
HINTS = typing.get_type_hints(EvaluatorSettings)
FORGETTING = {"max_train_samples": "forgetting_max_samples", "max_eval_samples": "forgetting_max_samples"}
HOLDERS = [
    (EvaluationArguments, {name: name for name in _SETTINGS}),
    (StudyArguments, EVALUATION_SETTINGS),
    (DataArguments, FORGETTING),
]


@pytest.mark.parametrize("cls, names", HOLDERS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_argument_holding_a_setting_has_its_type_and_default(cls, names):
    hints, fields = typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}
    for setting, argument in names.items():
        assert hints[argument] == HINTS[setting], (cls.__name__, argument)
        own_default = {("EvaluationArguments", "num_workers"), ("StudyArguments", "eval_num_workers")}  # 4 on the command line
        if (cls.__name__, argument) not in own_default:
            assert fields[argument].default == SETTINGS[setting].default, (cls.__name__, argument)


def test_the_help_of_a_setting_is_written_once():
    evaluate = {f.name: f.metadata["help"] for f in dataclasses.fields(EvaluationArguments)}
    study = {f.name: f.metadata["help"] for f in dataclasses.fields(StudyArguments)}
    for setting in ("batch_size", "max_train_samples", "text_tower", "lp_solver"):
        assert evaluate[setting] == SETTINGS[setting].metadata["help"]
    assert study["eval_batch_size"] == SETTINGS["batch_size"].metadata["help"]


@pytest.mark.parametrize("build, message", [
    (lambda: EvaluatorSettings(batch_size=0), "batch_size must be >= 1, got 0"),
    (lambda: EvaluationArguments(checkpoint=["x"], batch_size=0), "batch_size must be >= 1, got 0"),
    (lambda: StudyArguments(eval_batch_size=0), "eval_batch_size must be >= 1, got 0"),
    (lambda: StudyArguments(lp_iterations=0), "lp_iterations must be >= 1, got 0"),
    (lambda: DataArguments(forgetting_max_samples=0), r"forgetting_max_samples must be >= 1, got 0 \(leave it unset for no cap\)"),
    (lambda: EvaluatorSettings(num_workers=-1), "num_workers must be >= 0, got -1"),
    (lambda: EvaluatorSettings(text_tower="both"), "text_tower must be one of"),
    (lambda: EvaluatorSettings(lp_solver="sgd"), "unknown linear-probe solver 'sgd'"),
    (lambda: EvaluatorSettings(batch_size="8"), "batch_size must be an integer, got '8'"),
    (lambda: DataArguments(forgetting_every_percent=0), r"forgetting_every_percent must be in \(0, 100\], got 0"),
])
def test_one_check_per_setting_naming_the_flag_the_user_typed(build, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        build()


def test_the_forgetting_evaluator_reads_the_runs_own_data_as_the_run_does():
    data = DataArguments(dataset="custom", dataset_path="/data/mine", image_column="img", label_column="fine_label",
                         forgetting_dataset_paths=["mnist=/data/mnist"], forgetting_max_samples=64)
    settings = data.forgetting_settings(lp_iterations=5)
    assert settings.dataset_paths == {"mnist": "/data/mnist", "custom": "/data/mine"}
    assert (settings.image_columns, settings.label_columns) == ({"custom": "img"}, {"custom": "fine_label"})
    assert (settings.max_train_samples, settings.max_eval_samples, settings.lp_iterations) == (64, 64, 5)
    assert DataArguments().forgetting_settings("eurosat").dataset_paths == {}


def test_evaluate_arguments_build_the_settings_with_the_columns_of_local_data():
    args = EvaluationArguments(checkpoint=["x"], datasets="mine=/data/mine,cifar10", image_column=["img"], label_column=["mine=fine_label"],
                               dataset_path=["cifar10=/data/c10"], batch_size=8)
    settings = args.settings()
    assert (settings.image_columns, settings.label_columns) == ({"mine": "img"}, {"mine": "fine_label"})
    assert settings.dataset_paths == {"cifar10": "/data/c10"} and settings.batch_size == 8 and settings.num_workers == 4
    with pytest.raises(ValueError, match="image_column 'img' names no dataset and --datasets has no 'name=path' entry; write it 'name=img'"):
        EvaluationArguments(checkpoint=["x"], datasets="cifar10", image_column=["img"])
    with pytest.raises(ValueError, match="label_column takes 'name=column'"):
        EvaluationArguments(checkpoint=["x"], datasets="mine=/data", label_column=["mine="])
