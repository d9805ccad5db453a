"""Faults found by trying the commands as a new user would (docs/RELIABILITY.md, "A new user's fault trial"):
each test pins one fix."""

import os

import numpy as np
from conftest import finetune_argv, main, one_line_error
from PIL import Image
from test_folder_ownership import held_by_another_process

from ldifs_hf.benchmarks import load_benchmark
from ldifs_hf.benchmarks.registry import get_benchmark
from ldifs_hf.run_folder.lock import HOLDER_FILE, LOCK_FILE


def _image_folder_of_eurosat(root, images_per_class=2):
    """An image folder with EuroSAT's classes as folder names; every image of the spec's class c is the
    flat grey 20 * c, so a row's true class can be read back from its pixels."""
    names = get_benchmark("eurosat").class_names
    for split in ("train", "test"):
        for index, name in enumerate(names):
            os.makedirs(root / split / name, exist_ok=True)
            for copy in range(images_per_class):
                Image.new("RGB", (8, 8), (20 * index,) * 3).save(root / split / name / f"{copy}.png")
    return names


def test_an_image_folder_whose_sorted_class_folders_differ_from_the_spec_order_keeps_each_image_its_class(tmp_path):
    names = _image_folder_of_eurosat(tmp_path)
    assert sorted(names) != list(names)  # the folder order (sorted) is not the spec's order
    loaded = load_benchmark("eurosat", data_path=tmp_path, validation_fraction=0)
    assert loaded.class_names == list(names)
    for split in ("train", "test"):
        for row in loaded.splits[split]:
            true_class = int(np.asarray(row["image"])[0, 0, 0]) // 20
            assert loaded.class_names[row["label"]] == names[true_class], (split, row["label"], true_class)


def test_interpolate_into_a_folder_another_process_writes_is_one_line(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    """Two `interpolate` commands into one new folder both exited 0, each naming the folder as its α's model."""
    run = tmp_path / "run"
    assert main(["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, run, "zs-init-ldifs")]) == 0
    out = tmp_path / "theta"
    with held_by_another_process(out) as holder:
        line = one_line_error(capsys, ["interpolate", "--run", str(run), "--alpha", "0.5", "--output_dir", str(out)])
        assert f"is being written by pid {holder.pid}" in line
    assert not out.exists() or os.listdir(out) == []  # the refused command wrote nothing
    assert main(["interpolate", "--run", str(run), "--alpha", "0.5", "--output_dir", str(out)]) == 0
    assert not {LOCK_FILE, HOLDER_FILE} & set(os.listdir(out))
