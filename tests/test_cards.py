"""Model cards never carry this machine's paths: a model or dataset on the Hub is named by its id, a
local one as "a local model" / "local data" with its folder's name, in both cards (the classifier's
and the CLIP export's, which `--push_to_hub` uploads)."""

import re

import pytest
from huggingface_hub import ModelCard

from ldifs_hf.cards import data_name, model_name, write_model_cards
from ldifs_hf.records import RunRecord

# Anything that starts like an absolute path: /x, ~/x, C:\x (a URL's "://" aside).
ABSOLUTE = re.compile(r"(?<![\w:/.])(?:~?/[\w.-]|[A-Za-z]:\\)")


def _local_run(tmp_path, **fields) -> RunRecord:
    base, data = tmp_path / "models" / "clip-base", tmp_path / "data" / "my-flowers"
    base.mkdir(parents=True)
    data.mkdir(parents=True)
    return RunRecord(
        method="lp-init-ldifs", dataset="custom", base_model=str(base), regularizer="ldifs",
        regularizer_settings={"ldifs_lambda": 10.0, "ldifs_layers": [0, 3]}, regularizer_weight=10.0,
        regularizer_text=f"LDIFS, λ = 10.0, teacher {base}",
        dataset_splits=f"all of train (no validation split), test = 'test'; 8 train / 0 validation / 4 test images used; from the local copy {data}",
        results={"test_accuracy": 0.5}, output_dir=str(tmp_path / "run"), settings={"dataset_path": str(data)}, **fields,
    )


def _texts(paths) -> dict[str, str]:
    return {kind: open(path).read() for kind, path in paths.items()}


def test_cards_of_a_run_on_local_model_and_data_name_folders_not_paths(tmp_path):
    record = _local_run(tmp_path)
    run = tmp_path / "run"
    paths = write_model_cards(str(run), str(run / "clip"), record, repo_id="me/flowers")
    texts = _texts(paths)
    assert set(texts) == {"classifier", "clip"}
    for kind, text in texts.items():
        assert str(tmp_path) not in text, kind
        assert not ABSOLUTE.search(text), (kind, ABSOLUTE.search(text).group(0), text[ABSOLUTE.search(text).start() - 80:][:200])
        assert "a local model (`clip-base`)" in text, kind
        assert "local data (`my-flowers`)" in text, kind
        assert "from the local copy `my-flowers`" in text, kind  # the recorded split text, its path cut to the name
        assert "teacher `clip-base`" in text, kind  # a path inside the regularizer's own words, too
        assert ModelCard.load(paths[kind]).data.base_model is None  # no Hub id to link
    assert 'from_pretrained("path/to/run", trust_remote_code=True)' in texts["classifier"]
    assert "the `clip/` folder of this directory" in texts["classifier"]  # where the pushed export is, relatively
    assert 'pipeline("zero-shot-image-classification", model="me/flowers")' in texts["clip"]


def test_a_flyp_run_directory_card_and_a_card_without_repo_have_no_paths_either(tmp_path, tiny_clip_dir):
    from transformers import CLIPModel

    run, export = tmp_path / "run", tmp_path / "exports" / "flowers-clip"
    CLIPModel.from_pretrained(tiny_clip_dir).save_pretrained(run)
    record = _local_run(tmp_path, text_tower="fine-tuned (FLYP)")
    texts = _texts(write_model_cards(str(run), str(export), record))
    for kind, text in texts.items():
        assert str(tmp_path) not in text and not ABSOLUTE.search(text), kind
    assert "the folder `flowers-clip`" in texts["classifier"]
    assert 'model="path/to/flowers-clip"' in texts["clip"]


def test_hub_models_and_registered_benchmarks_are_named_by_their_ids(tmp_path):
    record = RunRecord(method="zs-init-ce", dataset="eurosat", base_model="openai/clip-vit-base-patch32", results={"test_accuracy": 0.9})
    assert model_name(record.base_model) == "`openai/clip-vit-base-patch32`"
    assert data_name(record) == "`eurosat`"
    local_copy = RunRecord(method="zs-init-ce", dataset="eurosat", base_model="x", settings={"dataset_path": str(tmp_path / "eurosat")})
    assert data_name(local_copy) == "`eurosat` (local data (`eurosat`))"
    text = open(write_model_cards(str(tmp_path / "run"), None, record)["classifier"]).read()
    assert "`openai/clip-vit-base-patch32`" in text and "a local model" not in text
    assert ModelCard.load(tmp_path / "run" / "README.md").data.base_model == "openai/clip-vit-base-patch32"


@pytest.mark.parametrize("path", ["./models/clip", "/no/such/dir/clip", "~/models/clip"])
def test_a_local_model_that_is_gone_is_still_named_by_its_folder(path):
    assert model_name(path) == "a local model (`clip`)"


@pytest.mark.parametrize("name_or_path", ["local", "openai/clip-vit-base-patch32"])
def test_the_classifiers_config_records_a_hub_base_model_never_a_local_path(name_or_path, tiny_clip_dir, tmp_path):
    import json

    from transformers import CLIPModel, CLIPProcessor

    from ldifs_hf import get_method
    from ldifs_hf.training.build import build_model

    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    if name_or_path != "local":
        clip.name_or_path = name_or_path
    tokenizer = CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer
    build_model(get_method("zs-init-ce"), clip, tokenizer, ["cat", "dog"], ["a photo of a {}."]).save_pretrained(tmp_path / "out")
    text = (tmp_path / "out" / "config.json").read_text()
    assert str(tiny_clip_dir) not in text and not ABSOLUTE.search(text)
    assert json.loads(text)["base_model"] == (None if name_or_path == "local" else name_or_path)
