"""The classifier saves/reloads with safetensors, and exports to a stock CLIPModel the pipeline runs."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModelForImageClassification, CLIPModel, pipeline

from ldifs_hf import CLIPVisionClassifier, encode_images, export_clip_model
from ldifs_hf.cards import write_model_cards
from ldifs_hf.hub import HubPushError, push_clip_to_hub
from ldifs_hf.records import RunRecord


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return CLIPModel.from_pretrained(tiny_clip_dir)


def test_classifier_logits_are_head_of_normalised_clip_features(clip):
    weight, bias = torch.randn(3, 32), torch.randn(3)
    model = CLIPVisionClassifier.from_clip(clip, weight, bias, id2label={0: "a", 1: "b", 2: "c"})
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = model(pixel_values=x, labels=torch.tensor([0, 1, 2, 0]), output_hidden_states=True)
        expected = F.normalize(encode_images(clip, x), dim=-1) @ weight.T + bias
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert out.loss.item() == pytest.approx(F.cross_entropy(expected, torch.tensor([0, 1, 2, 0])).item(), rel=1e-5)
    assert len(out.hidden_states) == clip.config.vision_config.num_hidden_layers + 1
    assert model.config.id2label[1] == "b"


def test_classifier_roundtrips_through_safetensors(clip, tmp_path):
    model = CLIPVisionClassifier.from_clip(clip, torch.randn(3, 32))
    model.save_pretrained(tmp_path)
    assert "model.safetensors" in os.listdir(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(reloaded, CLIPVisionClassifier)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reloaded(pixel_values=x).logits, model(pixel_values=x).logits, atol=1e-6)


def test_export_is_a_stock_clip_with_the_finetuned_tower_and_runs_in_the_pipeline(clip, tiny_clip_dir, tmp_path):
    model = CLIPVisionClassifier.from_clip(clip, torch.randn(3, 32))
    with torch.no_grad():
        for p in model.vision_model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "fine-tuned"
    export_dir = tmp_path / "clip"
    export_clip_model(model, tiny_clip_dir, export_dir)
    exported = CLIPModel.from_pretrained(export_dir)
    assert type(exported) is CLIPModel
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(encode_images(exported, x), encode_images(model, x), atol=1e-5)
        assert not torch.allclose(encode_images(exported, x), encode_images(clip, x), atol=1e-4)
    for name, p in exported.text_model.state_dict().items():
        assert torch.equal(p, clip.text_model.state_dict()[name])  # text tower stays pretrained
    classifier = pipeline("zero-shot-image-classification", model=str(export_dir), device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    result = classifier(image, candidate_labels=["cat", "dog"])
    assert {r["label"] for r in result} == {"cat", "dog"}
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-4)


def test_model_cards_state_method_lambda_dataset_and_results(tmp_path):
    record = RunRecord.from_dict(dict(  # a record of the earlier format, read into today's shape
        method="lp-init-ldifs", regularizer="ldifs", ldifs_lambda=10.0, ldifs_layers=[0, 3, 6, 9, 12],
        dataset="eurosat", base_model="openai/clip-vit-base-patch32", results={"test_accuracy": 0.9712}))
    paths = write_model_cards(str(tmp_path), str(tmp_path / "clip"), record, repo_id="me/eurosat-ldifs")
    clip_card = (tmp_path / "clip" / "README.md").read_text()
    assert paths == {"classifier": str(tmp_path / "README.md"), "clip": str(tmp_path / "clip" / "README.md")}
    for needle in ("lp-init-ldifs", "λ = 10.0", "eurosat", "0.9712", "zero-shot-image-classification", "me/eurosat-ldifs"):
        assert needle in clip_card
    for needle in ("lp-init-ldifs", "λ = 10.0", "eurosat", "0.9712", "trust_remote_code=True"):
        assert needle in (tmp_path / "README.md").read_text()
    assert not (tmp_path / "ldifs_run.json").exists()  # the run saves its RunRecord itself


def test_push_uploads_the_export_folder(monkeypatch, clip, tmp_path):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls["upload"] = (sorted(os.listdir(folder_path)), repo_id)
            return "https://hub/commit/1"

    monkeypatch.setattr("ldifs_hf.hub.HfApi", FakeApi)
    clip.save_pretrained(tmp_path)
    assert push_clip_to_hub(str(tmp_path), "me/model", token="t", private=True) == "https://hub/commit/1"
    assert calls["repo"] == ("me/model", True, True) and calls["token"] == "t"
    assert "model.safetensors" in calls["upload"][0]
    with pytest.raises(ValueError, match="not an exported model directory"):
        push_clip_to_hub(str(tmp_path / "nothing"), "me/model")

    class OfflineApi(FakeApi):
        def upload_folder(self, folder_path, repo_id, commit_message):
            raise ConnectionError("Connection refused\nretries exhausted")

    monkeypatch.setattr("ldifs_hf.hub.HfApi", OfflineApi)
    with pytest.raises(HubPushError, match="the export is kept there") as info:
        push_clip_to_hub(str(tmp_path), "me/model")
    assert "\n" not in str(info.value)
