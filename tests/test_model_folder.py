"""Model folders a user names are read as data first: a folder naming custom code is refused in one line
without a prompt and without running its code (with stdin closed and on a terminal that answers "y"),
a broken config.json is named, a non-CLIP is refused by its model_type, and the project's own saved
classifier loads through its known class, never through the source files saved beside it."""

import json
import os
import pty
import shutil
import subprocess
import sys

import pytest
import torch

from ldifs_hf.cli import main
from ldifs_hf.evaluation import CheckpointError
from ldifs_hf.evaluation.checkpoints import load_checkpoint
from ldifs_hf.model_folder import ModelFolderError, clip_config, load_clip_or_classifier, load_clip_processor, read_model_config
from ldifs_hf.modeling import CLIPVisionClassifier
from ldifs_hf.training.run import load_clip
from conftest import finetune_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hostile_copy(tiny_clip_dir, folder, marker, model_type="hostile", files=("hostile.py",)) -> str:
    """A copy of the tiny CLIP whose config names custom code that creates `marker` when it runs."""
    shutil.copytree(tiny_clip_dir, folder)
    code = f"open({str(marker)!r}, 'w').write('the folder code ran')\nfrom transformers import CLIPConfig, CLIPModel\n"
    code += "class HostileConfig(CLIPConfig):\n    model_type = 'hostile'\nclass HostileModel(CLIPModel):\n    config_class = HostileConfig\n"
    for name in files:
        (folder / name).write_text(code)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "hostile.HostileConfig", "AutoModel": "hostile.HostileModel"})
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _cli(argv, *, stdin, timeout=300):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "ldifs_hf", *argv], stdin=stdin, capture_output=True, text=True, env=env, timeout=timeout)


def _assert_one_error_line(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines[-5:]
    assert "Traceback" not in proc.stderr and "custom code? [y/N]" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("terminal", [False, True], ids=["stdin-closed", "terminal-answering-yes"])
def test_finetune_refuses_a_folder_naming_custom_code_without_prompting_or_running_it(tiny_clip_dir, eurosat_dir, tmp_path, terminal):
    marker = tmp_path / "MARKER"
    model = _hostile_copy(tiny_clip_dir, tmp_path / "hostile", marker)
    argv = ["finetune", *finetune_argv(model, eurosat_dir, tmp_path / "run", "zs-init-l2sp")]
    if terminal:  # a terminal that has already typed "y": a prompt would be answered yes at once
        controller, terminal_end = pty.openpty()
        os.write(controller, b"y\n")
        try:
            proc = _cli(argv, stdin=terminal_end)
        finally:
            os.close(terminal_end)
            os.close(controller)
    else:
        proc = _cli(argv, stdin=subprocess.DEVNULL)
    _assert_one_error_line(
        proc, f"model_name_or_path {model!r} is a 'hostile' model (its config names custom code, which is never run)",
        "accepted model_type 'clip'",
    )
    assert not marker.exists()


@pytest.mark.slow
def test_evaluate_refuses_a_base_model_or_checkpoint_naming_custom_code(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    model = _hostile_copy(tiny_clip_dir, tmp_path / "hostile", marker)

    def argv(checkpoint, pretrained, report):
        return ["evaluate", "--checkpoint", checkpoint, "--pretrained", pretrained, "--datasets", f"eurosat={eurosat_dir}",
                "--output_dir", str(tmp_path / report), "--device", "cpu", "--max_eval_samples", "4", "--max_train_samples", "4"]

    proc = _cli(argv(str(tiny_clip_dir), model, "a"), stdin=subprocess.DEVNULL)
    # The pretrained model gives the text tower: a CLIP only (a classifier, which loads, would fail later).
    _assert_one_error_line(proc, f"pretrained model {model!r} is a 'hostile' model", "accepted model_type 'clip'")
    # A checkpoint that cannot be loaded is reported as not scored (the others still are), exit code 1.
    assert main(argv(model, str(tiny_clip_dir), "b")) == 1
    assert "Traceback" not in capsys.readouterr().err
    report = (tmp_path / "b" / "results.md").read_text()
    assert "Not scored" in report and "is a 'hostile' model (its config names custom code, which is never run)" in report
    assert not marker.exists()


def test_every_loader_refuses_custom_code_by_model_type(tiny_clip_dir, tmp_path):
    marker = tmp_path / "MARKER"
    model = _hostile_copy(tiny_clip_dir, tmp_path / "hostile", marker)
    with pytest.raises(ModelFolderError, match="'hostile' model .*custom code, which is never run.*accepted model_type 'clip'$"):
        clip_config(model, what="model_name_or_path")
    with pytest.raises(ModelFolderError, match="reference_model_name_or_path .* is a 'hostile' model"):
        load_clip(model, what="reference_model_name_or_path")
    with pytest.raises(CheckpointError, match="pretrained model .* is a 'hostile' model.*'clip' or 'ldifs_clip_classifier'"):
        load_checkpoint(model, what="pretrained model")
    # The processor files are CLIP's; loading them does not ask the folder's config for code either.
    assert type(load_clip_processor(model)).__name__ == "CLIPProcessor"
    assert not marker.exists()


def test_a_clip_config_naming_custom_code_loads_as_clip_without_running_it(tiny_clip_dir, tmp_path):
    marker = tmp_path / "MARKER"
    model = _hostile_copy(tiny_clip_dir, tmp_path / "clip_with_code", marker, model_type="clip")
    loaded, processor = load_clip(model)
    assert type(loaded).__name__ == "CLIPModel" and type(processor).__name__ == "CLIPProcessor"
    assert type(load_checkpoint(model)).__name__ == "CLIPModel"
    assert not marker.exists()


def test_own_classifier_loads_through_its_class_not_the_files_saved_beside_it(tiny_clip_dir, tmp_path):
    clip, _ = load_clip(tiny_clip_dir)
    classifier = CLIPVisionClassifier.from_clip(clip, torch.randn(3, clip.config.projection_dim), torch.zeros(3))
    folder = tmp_path / "classifier"
    classifier.save_pretrained(folder)
    saved_code = sorted(name for name in os.listdir(folder) if name.endswith(".py"))
    assert saved_code and "auto_map" in json.loads((folder / "config.json").read_text())
    marker = tmp_path / "MARKER"
    for name in saved_code:  # replaced by code that leaves a marker if it is ever imported
        (folder / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    loaded = load_checkpoint(str(folder))
    assert isinstance(loaded, CLIPVisionClassifier)
    assert torch.equal(loaded.head.weight, classifier.head.weight)
    assert isinstance(load_clip_or_classifier(str(folder)), CLIPVisionClassifier)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"model_type": "clip",', "is not a JSON config"),
        ("", "is not a JSON config"),
        ("[1, 2]", "holds a JSON list, not a config object"),
        (b"\xff\xfe{}", "is not a JSON config"),
    ],
    ids=["truncated", "empty", "list", "not-utf8"],
)
def test_a_broken_config_json_is_named_in_one_line(tmp_path, content, needle):
    folder = tmp_path / "model"
    folder.mkdir()
    config_file = folder / "config.json"
    config_file.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ModelFolderError) as raised:
        read_model_config(folder, what="model_name_or_path")
    message = str(raised.value)
    assert message.startswith(f"model_name_or_path: {config_file} ") and needle in message and "\n" not in message
    with pytest.raises(CheckpointError, match=f"checkpoint: {config_file} "):
        load_checkpoint(str(folder))


def test_an_unreadable_config_json_is_named(tmp_path):
    folder = tmp_path / "model"
    (folder / "config.json").mkdir(parents=True)  # a folder where the file should be: open() fails
    with pytest.raises(ModelFolderError, match="config.json is a directory, not a JSON config file"):
        read_model_config(folder)
    os.rmdir(folder / "config.json")
    (folder / "config.json").write_text("{}")
    os.chmod(folder / "config.json", 0)
    try:
        if os.access(folder / "config.json", os.R_OK):
            pytest.skip("running as a user that reads any file")
        with pytest.raises(ModelFolderError, match=rf"cannot read {folder / 'config.json'} \(Permission denied\)"):
            read_model_config(folder)
    finally:
        os.chmod(folder / "config.json", 0o644)


def test_finetune_names_a_broken_config_and_a_non_clip_in_one_line(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip_dir, broken)
    (broken / "config.json").write_text('{"model_type": "clip", "vision_config": {')
    assert main(["finetune", *finetune_argv(broken, eurosat_dir, tmp_path / "a", "zs-init-l2sp")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: model_name_or_path: {broken / 'config.json'} is not a JSON config "
        "(Expecting property name enclosed in double quotes: line 1 column 42 (char 41))"
    )
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert main(["finetune", *finetune_argv(bert, eurosat_dir, tmp_path / "b", "zs-init-l2sp")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: model_name_or_path {str(bert)!r} is a 'bert' model; the paper's methods fine-tune a CLIP model: "
        "accepted model_type 'clip'"
    )


def test_a_non_clip_reference_model_is_refused_by_model_type(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    argv = finetune_argv(tiny_clip_dir, eurosat_dir, tmp_path / "run", "zs-init-l2sp", "--reference_model_name_or_path", str(bert))
    assert main(["finetune", *argv]) == 2
    assert f"error: reference_model_name_or_path {str(bert)!r} is a 'bert' model" in capsys.readouterr().err
