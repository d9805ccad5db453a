"""`prepare_study` resolves a copy of the study's arguments (absolute folders) and leaves the
caller's as given; `run_study` works on that copy."""

import os

from ldifs_hf.study import StudyArguments, run_study
from ldifs_hf.study.runner import prepare_study


def test_the_study_resolves_a_copy_and_leaves_the_callers_arguments_as_given(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = StudyArguments(output_dir="study", methods="zs-init-ce", finetune_tasks="eurosat", world_cache_dir="cache", plan=True)
    resolved, world = prepare_study(args)
    assert world is None and resolved is not args
    assert resolved.output_dir == os.path.join(str(tmp_path), "study") and resolved.world_cache_dir == os.path.join(str(tmp_path), "cache")
    assert (args.output_dir, args.world_cache_dir) == ("study", "cache")

    plan = run_study(args)
    assert [cell.method for cell in plan.cells] == ["zs-init-ce"] and "zs-init-ce" in capsys.readouterr().out
    assert (args.output_dir, args.world_cache_dir, args.model_name_or_path) == ("study", "cache", StudyArguments().model_name_or_path)
