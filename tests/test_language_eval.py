"""The language-model forgetting evaluation: lm-eval on tiny local tasks end to end, Δ / A_FT / held-out
loss computed right (pinned by hand), the base model's cache, a PEFT adapter scored as its merged model,
and the one-line refusals (unknown task, missing task folder, missing lm_eval)."""

import json
import math
import sys

import pytest
import torch
from datasets import Dataset

from ldifs_hf.language.harness import LanguageTaskError, TaskScore, task_score
from ldifs_hf.language.report import mean_delta
from ldifs_hf.language.retain import held_out_loss, load_retain_texts
from ldifs_hf.language.run import LanguageEvaluationArguments, _compared, evaluate_language_model, main
from ldifs_hf.language.skills import OLD_SKILLS, SkillsWorld, get_skill, train_char_tokenizer
from ldifs_hf.language.skills.tasks import MAX_GEN_TOKS, write_task
from ldifs_hf.records import RunRecord

RETAIN = ["copy abc=abc", "reverse abcd=dcba", "3+4 mod 13=7", "capital of Tata=Fefe", "copy zz=zz"]


def _tiny_llama(tokenizer, seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=48, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval()


@torch.no_grad()
def _greedy(model, tokenizer, prompt):
    """What the task's generate_until asks for, written out: greedy tokens until a newline, <eos> or MAX_GEN_TOKS, decoded without special tokens."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = []
    for _ in range(MAX_GEN_TOKS):
        token = int(model(input_ids=ids).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokenizer.decode(out, skip_special_tokens=True).split("\n")[0]


@torch.no_grad()
def _loss_by_hand(model, tokenizer, texts):
    """Σ −log p(t_i | t_<i) over every text's tokens after the first, one text at a time, / their count."""
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text).input_ids
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
        total -= sum(log_probs[i - 1, ids[i]].item() for i in range(1, len(ids)))
        count += len(ids) - 1
    return total / count


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A base model and a fine-tuned one (another init, with a run record), and two local tasks of 10 items whose
    answers are the base model's own greedy output for the first `n_right` items: its score is known in advance."""
    root = tmp_path_factory.mktemp("language")
    world = SkillsWorld(seed=0)
    tokenizer = train_char_tokenizer([s.text(*item) for s in OLD_SKILLS for item in world.sample(s, 20, 0)])
    base, tuned = _tiny_llama(tokenizer, 0), _tiny_llama(tokenizer, 1)
    base_dir, run_dir = root / "base", root / "run"
    for model, folder in ((base, base_dir), (tuned, run_dir)):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    RunRecord(method="sft+ldifs", dataset="tiny_copy", base_model=str(base_dir), regularizer="ldifs",
              regularizer_settings={"ldifs_lambda": 3.0}, regularizer_weight=3.0, settings={"seed": 7}).save(run_dir)
    tasks, n_right = root / "tasks", {"copy": 6, "reverse": 3}
    tasks.mkdir()
    expected = {}
    for name, right in n_right.items():
        prompts = [p for p, _ in world.sample(get_skill(name), 10, 5)]
        items = [(p, _greedy(base, tokenizer, p) if i < right else "never") for i, p in enumerate(prompts)]
        write_task(get_skill(name), items, tasks)
        (tasks / f"skills_{name}.yaml").rename(tasks / f"tiny_{name}.yaml")
        text = (tasks / f"tiny_{name}.yaml").read_text().replace(f"task: skills_{name}", f"task: tiny_{name}")
        (tasks / f"tiny_{name}.yaml").write_text(text)
        expected[f"tiny_{name}"] = {"base": right / 10, "tuned": sum(_greedy(tuned, tokenizer, p) == a for p, a in items) / 10}
    (root / "retain.txt").write_text("\n".join(RETAIN) + "\n")
    return {"root": root, "base": base, "tuned": tuned, "tokenizer": tokenizer, "base_dir": base_dir, "run_dir": run_dir, "tasks": tasks,
            "expected": expected}


def _evaluate(world, tmp_path, **kwargs):
    defaults = dict(checkpoint=[str(world["run_dir"])], tasks="tiny_copy,tiny_reverse", task_dir=str(world["tasks"]),
                    retain=str(world["root"] / "retain.txt"), output_dir=str(tmp_path / "report"), cache_dir=str(tmp_path / "cache"),
                    batch_size=4)
    return evaluate_language_model(**{**defaults, **kwargs})


def test_scores_deltas_a_ft_and_retain_loss_end_to_end(tiny_world, tmp_path):
    pytest.importorskip("lm_eval")
    result = _evaluate(tiny_world, tmp_path)
    expected = tiny_world["expected"]
    assert result.pretrained == str(tiny_world["base_dir"])  # the base the run record names
    assert {t: s["score"] for t, s in result.base_scores.items()} == pytest.approx({t: e["base"] for t, e in expected.items()})
    (record,) = result.records
    assert record["status"] == "ok" and record["method"] == "sft+ldifs"
    assert (record["regularizer"], record["lambda"], record["seed"], record["finetune_task"]) == ("ldifs", 3.0, 7, "tiny_copy")
    for task, values in record["eval"].items():
        assert values["score"] == pytest.approx(expected[task]["tuned"])
        assert values["delta"] == pytest.approx(expected[task]["tuned"] - expected[task]["base"])
        assert values["metric"] == "exact_match,none"
    assert record["a_ft"] == record["eval"]["tiny_copy"]["score"]
    assert mean_delta(record) == pytest.approx(expected["tiny_reverse"]["tuned"] - expected["tiny_reverse"]["base"])
    assert record["retain_loss"] == pytest.approx(_loss_by_hand(tiny_world["tuned"], tiny_world["tokenizer"], RETAIN), rel=1e-5)
    assert record["retain_loss_base"] == pytest.approx(_loss_by_hand(tiny_world["base"], tiny_world["tokenizer"], RETAIN), rel=1e-5)
    assert record["retain_perplexity"] == pytest.approx(math.exp(record["retain_loss"]))
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["records"][0]["eval"] == record["eval"] and saved["base_scores"] == result.base_scores
    assert "tiny_reverse" in (tmp_path / "report" / "results.md").read_text()


def test_base_model_is_scored_once_then_read_from_the_cache(tiny_world, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    import ldifs_hf.language.run as run

    scored = []
    real = run.score_model
    monkeypatch.setattr(run, "score_model", lambda model, *a, **k: scored.append(model) or real(model, *a, **k))
    first = _evaluate(tiny_world, tmp_path, output_dir=str(tmp_path / "one"))
    second = _evaluate(tiny_world, tmp_path, output_dir=str(tmp_path / "two"))
    assert (first.base_from_cache, second.base_from_cache) == (False, True)
    assert len(scored) == 3  # the base and the checkpoint, then the checkpoint alone
    assert second.base_scores == first.base_scores and second.base_retain == first.base_retain
    assert second.records[0]["eval"] == first.records[0]["eval"]
    # Another retain set is another key: the base is scored again.
    third = _evaluate(tiny_world, tmp_path, output_dir=str(tmp_path / "three"), retain_max_samples=2)
    assert not third.base_from_cache and len(scored) == 5


def test_an_adapter_checkpoint_scores_as_its_merged_model(tiny_world, tmp_path):
    pytest.importorskip("lm_eval")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_world["base_dir"])
    torch.manual_seed(3)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    adapted = peft.get_peft_model(base, config)
    adapted.save_pretrained(tmp_path / "adapter")
    adapted.merge_and_unload().save_pretrained(tmp_path / "merged")
    tiny_world["tokenizer"].save_pretrained(tmp_path / "merged")
    result = _evaluate(tiny_world, tmp_path, checkpoint=[f"lora={tmp_path / 'adapter'}", f"merged={tmp_path / 'merged'}"],
                       pretrained=str(tiny_world["base_dir"]), finetune_task="tiny_copy")
    adapter, merged = result.records
    assert (adapter["kind"], merged["kind"], adapter["status"], merged["status"]) == ("adapter", "model", "ok", "ok")
    assert adapter["retain_loss"] != pytest.approx(adapter["retain_loss_base"], rel=1e-3)  # the adapter changes the model
    assert adapter["eval"] == merged["eval"]
    assert adapter["retain_loss"] == pytest.approx(merged["retain_loss"], rel=1e-5)


def test_held_out_loss_of_a_uniform_model_is_log_vocabulary(tiny_world):
    model = _tiny_llama(tiny_world["tokenizer"], 0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # zero logits: every token has probability 1 / V
    loss = held_out_loss(model, tiny_world["tokenizer"], RETAIN, batch_size=2)
    assert loss.loss == pytest.approx(math.log(len(tiny_world["tokenizer"])), rel=1e-6)
    assert loss.tokens == sum(len(t) - 1 for t in RETAIN) and loss.texts == len(RETAIN)  # one token per character


def test_held_out_loss_is_the_token_weighted_mean_nll_whatever_the_batching(tiny_world):
    model, tokenizer = tiny_world["tuned"], tiny_world["tokenizer"]
    by_hand = _loss_by_hand(model, tokenizer, RETAIN)
    for batch_size in (1, 2, 5):
        assert held_out_loss(model, tokenizer, RETAIN, batch_size=batch_size).loss == pytest.approx(by_hand, rel=1e-5)
    cut = held_out_loss(model, tokenizer, RETAIN, max_length=4)
    assert cut.tokens == 3 * len(RETAIN) and cut.loss == pytest.approx(_loss_by_hand(model, tokenizer, [t[:4] for t in RETAIN]), rel=1e-5)


def test_retain_texts_from_files_folders_and_datasets(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    Dataset.from_dict({"text": ["x", "y"], "other": [1, 2]}).save_to_disk(str(tmp_path / "saved"))
    Dataset.from_dict({"text": ["j1", "j2"]}).to_json(str(tmp_path / "r.jsonl"))
    assert load_retain_texts(str(tmp_path / "a.txt")) == ["one", "two"]
    assert load_retain_texts([str(tmp_path / "a.txt"), str(tmp_path / "r.jsonl")]) == ["one", "two", "j1", "j2"]
    assert load_retain_texts(str(tmp_path / "saved"), max_samples=1) == ["x"]
    assert load_retain_texts(Dataset.from_dict({"body": ["b"]}), text_column="body") == ["b"]
    with pytest.raises(ValueError, match="no column 'body'; its columns: text, other"):
        load_retain_texts(str(tmp_path / "saved"), text_column="body")
    with pytest.raises(FileNotFoundError, match="retain set '.*missing.txt' does not exist"):
        load_retain_texts(str(tmp_path / "missing.txt"))


def test_delta_is_signed_so_that_negative_is_forgetting():
    up = TaskScore(score=0.7, metric="acc,none", stderr=None, higher_is_better=True, samples=10)
    down = TaskScore(score=12.0, metric="word_perplexity,none", stderr=None, higher_is_better=False, samples=10)
    assert _compared(up, {"score": 0.9})["delta"] == pytest.approx(-0.2)
    assert _compared(down, {"score": 10.0})["delta"] == pytest.approx(-2.0)  # perplexity rose: forgetting
    assert mean_delta({"finetune_task": "a", "eval": {"a": {"delta": 0.5}, "b": {"delta": -0.1}, "c": {"delta": -0.3}}}) == pytest.approx(-0.2)


def test_task_score_reads_the_first_listed_metric_or_the_one_asked():
    results = {"results": {"t": {"alias": "t", "acc,none": 0.25, "acc_stderr,none": 0.1, "acc_norm,none": 0.5, "acc_norm_stderr,none": "N/A"}},
               "configs": {"t": {"metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}},
               "higher_is_better": {"t": {"acc": True, "acc_norm": True}}, "n-samples": {"t": {"effective": 8}}}
    assert task_score(results, "t") == TaskScore(0.25, "acc,none", 0.1, True, 8)
    assert task_score(results, "t", "acc_norm") == TaskScore(0.5, "acc_norm,none", None, True, 8)
    with pytest.raises(LanguageTaskError, match="task 't' has no metric 'f1,none'; its metrics: acc,none, acc_norm,none"):
        task_score(results, "t", "f1")


@pytest.mark.slow  # an unknown name makes lm_eval index its whole catalogue (about 13 s)
def test_unknown_task_and_missing_task_folder_are_one_line(tiny_world, tmp_path):
    pytest.importorskip("lm_eval")
    with pytest.raises(LanguageTaskError, match=r"unknown task\(s\) 'tiny_nope': not a task in task_dir .* \(its tasks: tiny_copy, tiny_reverse\)") as err:
        _evaluate(tiny_world, tmp_path, tasks="tiny_copy,tiny_nope")
    assert "\n" not in str(err.value) and not (tmp_path / "report").exists()  # refused before anything was written
    with pytest.raises(LanguageTaskError, match="task_dir '.*nowhere' does not exist; pass a folder of lm-eval task YAML files"):
        _evaluate(tiny_world, tmp_path, task_dir=str(tmp_path / "nowhere"))


def test_missing_lm_eval_is_one_line_naming_the_extra(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "ldifs_hf\[lm_eval\]"') as err:
        _evaluate(tiny_world, tmp_path)
    assert "\n" not in str(err.value)


def test_an_existing_report_is_refused_unless_overwritten_and_main_writes_one(tiny_world, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    argv = ["--checkpoint", str(tiny_world["run_dir"]), "--tasks", "tiny_copy", "--task_dir", str(tiny_world["tasks"]),
            "--output_dir", str(tmp_path / "report"), "--cache_dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    assert "scored 1 checkpoint(s) on 1 task(s)" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="already holds a report .*pass --overwrite_report"):
        main(argv)
    assert main([*argv, "--overwrite_report"]) == 0


def test_arguments_are_checked_before_anything_loads():
    with pytest.raises(ValueError, match="metric takes 'task=metric'"):
        LanguageEvaluationArguments(checkpoint="x", tasks="a", metric=["acc"])
    with pytest.raises(ValueError, match="batch_size must be > 0, got 0"):
        LanguageEvaluationArguments(checkpoint="x", tasks="a", batch_size=0)
    args = LanguageEvaluationArguments(checkpoint="x", tasks=["a", "b"], finetune_task="c")
    assert args.checkpoint == ["x"] and args.task_names() == ["a", "b", "c"]


def test_the_lm_eval_extra_is_declared_and_named_by_the_error():
    import configparser
    import os

    from ldifs_hf.language.harness import LM_EVAL_EXTRA

    config = configparser.ConfigParser()
    config.read(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.cfg"))
    extras = {name: value.split() for name, value in config["options.extras_require"].items()}
    assert LM_EVAL_EXTRA == 'pip install "ldifs_hf[lm_eval]"'
    assert any(r.startswith("lm_eval>=") for r in extras["lm_eval"]) and any(r.startswith("lm_eval>=") for r in extras["test"])


def test_the_evaluate_lm_command_writes_the_report_and_refuses_bad_input_in_one_line(tiny_world, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    from ldifs_hf.cli import main as cli_main

    argv = ["evaluate-lm", "--checkpoint", str(tiny_world["run_dir"]), "--tasks", "tiny_copy", "--task_dir", str(tiny_world["tasks"]),
            "--output_dir", str(tmp_path / "report"), "--cache_dir", str(tmp_path / "cache"), "--batch_size", "4"]
    assert cli_main(argv) == 0
    assert "scored 1 checkpoint(s) on 1 task(s)" in capsys.readouterr().out
    records = json.loads((tmp_path / "report" / "results.json").read_text())["records"]
    assert [r["eval"]["tiny_copy"]["score"] for r in records] == [tiny_world["expected"]["tiny_copy"]["tuned"]]
    for bad, says in ((["--batch_size", "0"], "batch_size must be > 0, got 0"), (["--retain", str(tmp_path / "none.txt")], "none.txt")):
        assert cli_main([*argv, "--overwrite_report", *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert cli_main(["evaluate-lm", "--tasks", "tiny_copy"]) == 2
    assert capsys.readouterr().err == "error: checkpoint is required: one or more model, adapter or run directories ('path' or 'method=path')\n"
