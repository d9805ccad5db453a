"""Hub-native outputs: the classifier directory runs where ldifs_hf is absent (trust_remote_code), each
output directory gets its own card with Hub metadata, a user's README survives, and push pre-flight
failures are one line. Offline: the Hub API is a fake."""

import ast
import json
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from ldifs_hf.cards import write_model_cards
from ldifs_hf.hub import HubPushError, check_push_target
from ldifs_hf.modeling import CLIPVisionClassifier
from ldifs_hf.records import RunRecord

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))


def _record(base_model="openai/clip-vit-base-patch32", **results) -> RunRecord:
    return RunRecord.from_dict(dict(  # a record of the earlier format, read into today's shape
        method="lp-init-ldifs", dataset="eurosat", base_model=base_model, regularizer="ldifs", ldifs_lambda=10.0,
        ldifs_layers=[0, 3, 6], ldifs_normalization="token", dataset_splits="train 90% / validation 10% of train; test",
        results=results,
    ))


def _imported_packages(path) -> set[str]:
    """Top-level packages a module imports (relative imports excluded)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


# -- trust_remote_code ---------------------------------------------------------------------------------

# Runs in a fresh interpreter: ldifs_hf is made unimportable, so the model can only come from the code
# saved in the directory.
_CHILD = r"""
import importlib.abc, json, sys

class _NoLdifs(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ldifs_hf" or name.startswith("ldifs_hf."):
            raise ImportError("ldifs_hf must not be needed to load this model")

sys.meta_path.insert(0, _NoLdifs())
import numpy as np, torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

path = sys.argv[1]
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True).eval()
pixel_values = AutoImageProcessor.from_pretrained(path).__call__(images=image, return_tensors="pt")["pixel_values"]
with torch.no_grad():
    logits = model(pixel_values=pixel_values).logits[0].tolist()
top = pipeline("image-classification", model=path, trust_remote_code=True, device="cpu")(image)[0]["label"]
assert not any(m == "ldifs_hf" or m.startswith("ldifs_hf.") for m in sys.modules), sorted(m for m in sys.modules if "ldifs" in m)
print("RESULT " + json.dumps({"logits": logits, "top": top, "module": type(model).__module__}))
"""


def test_classifier_directory_loads_and_runs_in_a_process_without_ldifs_hf(tiny_clip_dir, tmp_path):
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    generator = torch.Generator().manual_seed(0)
    model = CLIPVisionClassifier.from_clip(clip, torch.randn(3, clip.config.projection_dim, generator=generator), torch.randn(3, generator=generator), id2label=LABELS).eval()
    out = tmp_path / "classifier"
    model.save_pretrained(out)
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    processor.save_pretrained(out)

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "ldifs_clip_classifier"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_ldifs_clip.CLIPClassifierConfig",
        "AutoModelForImageClassification": "modeling_ldifs_clip.CLIPVisionClassifier",
    }
    for name in ("configuration_ldifs_clip.py", "modeling_ldifs_clip.py"):
        assert _imported_packages(out / name) <= {"torch", "transformers"}, name

    with torch.no_grad():
        expected = model(pixel_values=processor(images=_image(), return_tensors="pt")["pixel_values"]).logits[0]

    elsewhere = tmp_path / "elsewhere"  # a PYTHONPATH and cwd without the repository
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH=str(elsewhere), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(out)], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])

    assert result["module"].startswith("transformers_modules.")  # the directory's copy of the code ran
    assert torch.allclose(torch.tensor(result["logits"]), expected, atol=1e-5)
    assert result["top"] == LABELS[int(expected.argmax())]


# -- model cards ---------------------------------------------------------------------------------------


def test_each_directory_gets_its_own_card_with_hub_metadata(tmp_path):
    output_dir, export_dir = tmp_path / "run", tmp_path / "run" / "clip"
    export_dir.mkdir(parents=True)
    record = _record(validation_accuracy=0.95, test_accuracy=0.9712)
    paths = write_model_cards(str(output_dir), str(export_dir), record, repo_id="me/eurosat-ldifs",
                              dataset_id="blanchon/EuroSAT_RGB", deltas={"cifar10": {"zs": -0.031, "lp": -0.012}})
    assert paths == {"classifier": str(output_dir / "README.md"), "clip": str(export_dir / "README.md")}
    assert not (output_dir / "ldifs_run.json").exists()  # the run writes its record, not the cards

    classifier, clip = ModelCard.load(paths["classifier"]), ModelCard.load(paths["clip"])
    for card, task in ((classifier, "image-classification"), (clip, "zero-shot-image-classification")):
        data = card.data
        assert data.license == "other"
        assert data.base_model == "openai/clip-vit-base-patch32"
        assert data.datasets == ["blanchon/EuroSAT_RGB"]
        assert set(data.tags) >= {"ldifs_hf", "lp-init-ldifs", "clip"}
        assert data.pipeline_tag == task
        assert data.library_name == "transformers"
        accuracy = [r for r in data.eval_results if r.metric_type == "accuracy"]
        assert [(r.task_type, r.dataset_name, r.dataset_type, r.metric_value) for r in accuracy] == [
            ("image-classification", "eurosat", "blanchon/EuroSAT_RGB", 0.9712)]
        deltas = {(r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results if r.metric_type != "accuracy"}
        assert deltas == {("cifar10", "delta_zs_accuracy"): -0.031, ("cifar10", "delta_lp_accuracy"): -0.012}
        assert "inherit" in card.text and "openai/clip-vit-base-patch32" in card.text
        for needle in ("λ = 10.0", "0.9712", "eurosat", "-3.10"):
            assert needle in card.text

    assert "CLIPVisionClassifier" in classifier.text
    assert 'pipeline("image-classification", model=' in classifier.text and "trust_remote_code=True" in classifier.text
    assert "stock `CLIPModel`" in clip.text
    assert 'pipeline("zero-shot-image-classification", model="me/eurosat-ldifs")' in clip.text
    assert "trust_remote_code" not in clip.text
    assert "push_clip_to_hub" in clip.text and "me/eurosat-ldifs" in clip.text
    assert "not this directory" in classifier.text  # the classifier says it is not what gets pushed
    assert classifier.text != clip.text


def test_a_flyp_run_directory_is_carded_as_the_stock_clip_it_holds(tiny_clip_dir, tmp_path):
    run, export = tmp_path / "run", tmp_path / "run" / "clip"
    CLIPModel.from_pretrained(tiny_clip_dir).save_pretrained(run)  # what the Trainer saves for FLYP
    record = RunRecord(method="flyp", dataset="eurosat", base_model="openai/clip-vit-base-patch32",
                       text_tower="fine-tuned (FLYP)", results={"test_accuracy": 0.9})
    paths = write_model_cards(str(run), str(export), record, repo_id="me/flyp")
    card = ModelCard.load(paths["classifier"])
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert "stock `CLIPModel`" in card.text and "trust_remote_code" not in card.text and "CLIPVisionClassifier" not in card.text
    assert "not this directory" in card.text  # the export, not the run directory, is pushed
    assert "zero-shot" in card.data.eval_results[0].metric_name
    assert "is what `push_clip_to_hub`" in ModelCard.load(paths["clip"]).text


@pytest.mark.parametrize("local", ["relative existing dir", "/no/such/dir/clip", "./models/clip"])
def test_local_base_model_is_left_out_of_the_metadata(tiny_clip_dir, tmp_path, monkeypatch, local):
    base = local
    if local == "relative existing dir":  # a bare name is a valid Hub id too; only the directory says it is local
        monkeypatch.chdir(os.path.dirname(os.path.abspath(tiny_clip_dir)))
        base = os.path.basename(os.path.abspath(tiny_clip_dir))
    paths = write_model_cards(str(tmp_path / "run"), None, _record(base_model=base), license="mit")
    assert set(paths) == {"classifier"}
    card = ModelCard.load(paths["classifier"])
    assert card.data.base_model is None
    assert card.data.license == "mit" and "inherit" not in card.text
    assert card.data.eval_results is None and "Not measured yet." in card.text  # no results, no claims
    assert card.data.datasets is None


def test_a_users_readme_is_left_alone_and_ours_is_rewritten(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    theirs = b"---\ntags:\n- generated_from_trainer\n---\n# My notes\n\nkeep me \xe2\x9c\x93\n"
    (run / "README.md").write_bytes(theirs)
    with caplog.at_level(logging.WARNING, logger="ldifs_hf.cards"):
        paths = write_model_cards(str(run), None, _record(test_accuracy=0.5))
    assert (run / "README.md").read_bytes() == theirs
    assert paths["classifier"] == str(run / "MODEL_CARD.md")
    assert ModelCard.load(run / "MODEL_CARD.md").data.eval_results[0].metric_value == 0.5
    assert any("not written by ldifs_hf" in r.getMessage() for r in caplog.records)

    # A README we wrote is ours to update when the run is redone.
    mine = tmp_path / "mine"
    write_model_cards(str(mine), None, _record(test_accuracy=0.5))
    paths = write_model_cards(str(mine), None, _record(test_accuracy=0.75))
    assert paths["classifier"] == str(mine / "README.md") and not (mine / "MODEL_CARD.md").exists()
    assert ModelCard.load(mine / "README.md").data.eval_results[0].metric_value == 0.75


# -- push pre-flight -----------------------------------------------------------------------------------


class FakeApi:
    """whoami/repo_info answering from attributes; `calls` records what was asked."""

    def __init__(self, whoami=None, repo_info=None):
        self._whoami, self._repo_info, self.calls = whoami, repo_info, []

    def whoami(self):
        self.calls.append("whoami")
        if isinstance(self._whoami, BaseException):
            raise self._whoami
        return self._whoami

    def repo_info(self, repo_id, repo_type=None):
        self.calls.append(("repo_info", repo_id, repo_type))
        if isinstance(self._repo_info, BaseException):
            raise self._repo_info
        return self._repo_info


def _http_error(cls, status):
    # Only what HfHubHTTPError reads from a response, whichever HTTP client huggingface_hub uses.
    response = SimpleNamespace(status_code=status, headers={}, request=None)
    return cls(f"{status} Client Error\nfor url https://huggingface.co/api/x", response=response)


ME = {"name": "me", "orgs": [{"name": "my-org"}], "auth": {"accessToken": {"role": "write"}}}


def _connect_error():
    """The connection error of huggingface_hub's HTTP client (httpx2 or httpx), not an OSError."""
    for name in ("httpx2", "httpx"):
        try:
            client = __import__(name)
        except ImportError:
            continue
        return client.ConnectError("[Errno -3] Temporary failure in name resolution\n" + "x" * 500)
    pytest.skip("huggingface_hub uses neither httpx2 nor httpx here")


@pytest.mark.parametrize("error", [
    lambda: ConnectionError("Failed to establish a new connection:\n[Errno 111] Connection refused " + "x" * 500),
    _connect_error,
    lambda: OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/whoami-v2: offline mode is enabled."),
])
def test_unreachable_hub_is_one_line(error):
    with pytest.raises(HubPushError) as info:
        check_push_target("me/model", "hf_token", api=FakeApi(whoami=error()))
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith("cannot reach the Hugging Face Hub to push to 'me/model'")
    assert "drop --push_to_hub" in message


def test_no_token_fails_before_any_network_call(monkeypatch):
    monkeypatch.setattr("ldifs_hf.hub.get_token", lambda: None)
    api = FakeApi(whoami=ME)
    with pytest.raises(HubPushError, match="no Hugging Face token: run `hf auth login` or pass --hub_token"):
        check_push_target("me/model", None, api=api)
    assert api.calls == []


def test_missing_repo_will_be_created_and_a_bare_name_goes_under_the_user():
    api = FakeApi(whoami=ME, repo_info=_http_error(RepositoryNotFoundError, 404))
    assert check_push_target("model", "hf_token", api=api) == "me/model"
    assert api.calls == ["whoami", ("repo_info", "me/model", "model")]
    assert check_push_target("my-org/model", "hf_token", api=FakeApi(whoami=ME, repo_info=object())) == "my-org/model"


@pytest.mark.parametrize("repo_id, api, needle", [
    ("me/model", FakeApi(whoami=_http_error(HfHubHTTPError, 401)), "token was rejected"),
    ("me/model", FakeApi(whoami={**ME, "auth": {"accessToken": {"role": "read"}}}), "read-only"),
    ("someone-else/model", FakeApi(whoami=ME), "cannot push to 'someone-else/model'"),
    ("datasets/me/data", FakeApi(whoami=ME), "names a dataset repo"),
    ("not a/repo id", FakeApi(whoami=ME), "is not a Hub model repo id"),
    (None, FakeApi(whoami=ME), "pass --hub_model_id"),
    ("me/model", FakeApi(whoami=ME, repo_info=_http_error(HfHubHTTPError, 403)), "refused access to 'me/model'"),
])
def test_push_target_problems_are_one_line(repo_id, api, needle):
    with pytest.raises(HubPushError) as info:
        check_push_target(repo_id, "hf_token", api=api)
    assert needle in str(info.value) and "\n" not in str(info.value)
