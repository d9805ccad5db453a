"""The skills world: deterministic skills, a character tokenizer that round-trips every skill's text, task
files lm-eval reads, and (slow) a quick pre-training that lifts the tiny LM's atlas above chance."""

import json

import pytest

from ldifs_hf.language.skills import NEW_SKILL, OLD_SKILLS, SKILLS, SkillsSettings, SkillsWorld, get_skill, shift_letters, skills_settings
from ldifs_hf.language.skills.pretrain import pretraining_lines, evaluation_items, train_char_tokenizer
from ldifs_hf.language.skills.tasks import build_skills_data, retain_lines, task_name


def test_skills_are_deterministic_and_correct():
    world = SkillsWorld(seed=0)
    for skill in SKILLS:
        assert world.sample(skill, 20, 3) == world.sample(skill, 20, 3)
        assert world.sample(skill, 20, 3) != world.sample(skill, 20, 4)
    assert world.atlas() == SkillsWorld(seed=0).atlas() != SkillsWorld(seed=1).atlas()
    assert len({c for c, _ in world.atlas()} | {c for _, c in world.atlas()}) == 2 * world.num_countries  # all names distinct
    for prompt, answer in world.sample(get_skill("add"), 50, 0):
        a, b = prompt[: -len(" mod 10=")].split("+")
        assert int(answer) == (int(a) + int(b)) % 10
    for prompt, answer in world.sample(get_skill("reverse"), 20, 0):
        assert answer == prompt[len("reverse "):-1][::-1]
    assert shift_letters("abz") == "bca" and NEW_SKILL.name == "shift" and NEW_SKILL not in OLD_SKILLS
    assert len(world.table(get_skill("add"))) == 10 * 10
    with pytest.raises(ValueError, match="unknown skill 'sort'; skills: add, copy, reverse, capital, shift"):
        get_skill("sort")


def test_the_character_tokenizer_round_trips_every_skill(tmp_path):
    from transformers import AutoTokenizer

    world = SkillsWorld(seed=0)
    texts = [skill.text(*item) for skill in SKILLS for item in world.sample(skill, 30, 1)]
    tokenizer = train_char_tokenizer(texts[:10])  # the alphabet covers what training did not see
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in texts:
        ids = reloaded(text).input_ids
        assert len(ids) == len(text) and reloaded.unk_token_id not in ids  # one token per character, none unknown
        assert reloaded.decode(ids) == text
    assert reloaded.decode(reloaded(texts[0] + reloaded.eos_token).input_ids, skip_special_tokens=True) == texts[0]


def test_test_items_are_held_out_of_pretraining_and_the_retain_set():
    settings = SkillsSettings(pretrain_pool=300, test_size=50, retain_size=30, sft_size=10)
    world = settings.world()
    lines = set(pretraining_lines(world, settings)) | set(retain_lines(world, settings))
    for skill in OLD_SKILLS:
        items = evaluation_items(world, skill, settings.test_size)
        assert len({p for p, _ in items}) == len(items) == (len(world.table(skill)) if skill.finite and len(world.table(skill)) < 50 else 50)
        if not skill.finite:
            assert not {skill.text(p, a) for p, a in items} & lines


def test_task_files_load_in_lm_eval(tmp_path):
    settings = SkillsSettings(test_size=12, sft_size=8, retain_size=5)
    build_skills_data(settings, tmp_path / "build", final_dir=tmp_path / "final")
    (tmp_path / "build").rename(tmp_path / "final")  # as prepare_skills moves it into place
    rows = [json.loads(line) for line in (tmp_path / "final" / "tasks" / "skills_copy.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["answer"] == r["prompt"][len("copy "):-1] for r in rows)
    from datasets import load_from_disk

    sft = load_from_disk(str(tmp_path / "final" / "sft"))
    assert sft.column_names == ["prompt", "completion"] and len(sft) == 8
    assert all(shift_letters(p[len("shift "):-1]) + "\n" == c for p, c in zip(sft["prompt"], sft["completion"]))
    assert len(load_from_disk(str(tmp_path / "final" / "retain"))) == 5 * len(OLD_SKILLS)
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(tmp_path / "final" / "tasks"), include_defaults=False)
    assert sorted(manager.all_tasks) == sorted(task_name(s) for s in SKILLS)
    task = get_task_dict([task_name(NEW_SKILL)], manager)[task_name(NEW_SKILL)]
    docs = list(task.test_docs())
    assert len(docs) == 12 and task.doc_to_text(docs[0]) == docs[0]["prompt"] and task.doc_to_target(docs[0]) == docs[0]["answer"]


@pytest.mark.slow
def test_quick_pretraining_lifts_the_atlas_above_chance(tmp_path):
    pytest.importorskip("lm_eval")
    from ldifs_hf.language import evaluate_language_model
    from ldifs_hf.language.skills import prepare_skills

    skills = prepare_skills(skills_settings("quick"), tmp_path / "cache", progress=False)
    assert prepare_skills(skills_settings("quick"), tmp_path / "cache", progress=False).model_dir == skills.model_dir  # cached
    result = evaluate_language_model(checkpoint=[str(skills.model_dir)], tasks=list(skills.old_tasks), task_dir=str(skills.task_dir),
                                     pretrained=str(skills.model_dir), output_dir=str(tmp_path / "report"), base_cache=False, batch_size=64)
    scores = {task: s["score"] for task, s in result.base_scores.items()}
    # A capital guessed among the atlas's 40 is right 1 time in 40; the quick model knows several times more.
    assert scores["skills_capital"] > 4 / 40, scores
