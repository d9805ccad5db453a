"""The skills world's data on disk: one lm-evaluation-harness task per skill (a YAML over a local JSONL,
generate_until, greedy, exact match), the new skill's SFT set and the retain set of the held-out loss.

    <cache>/skills/<fingerprint>/tasks-<task fingerprint>/
        tasks/skills_add.yaml, skills_add.jsonl, ...   one per skill, the new one ("skills_shift") included
        sft/       a `datasets` folder (save_to_disk) of {"prompt", "completion"} rows: trl's SFTTrainer reads it
        retain/    a `datasets` folder of {"text"} lines of the old skills, drawn apart from every test item

The YAML files name their JSONL by absolute path, so they load from any working directory
(`TaskManager(include_path=.../tasks)`, or `--task_dir` of the language-model evaluation).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ...world.settings import write_atomically
from .generator import NEW_SKILL, OLD_SKILLS, SKILLS, Skill, SkillsWorld
from .pretrain import pretrained_skills_model, evaluation_items
from .settings import SkillsSettings, skills_cache_dir

TASK_PREFIX = "skills_"
TASKS_FOLDER, SFT_FOLDER, RETAIN_FOLDER = "tasks", "sft", "retain"
_SFT_STREAM, _RETAIN_STREAM = 2, 3
# Longest answer a skill writes, in characters (a capital's name), plus its newline and room to spare.
MAX_GEN_TOKS = 16

_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
fewshot_delimiter: "\\n"
generation_kwargs:
  until: ["\\n"]
  do_sample: false
  max_gen_toks: {max_gen_toks}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
  skill: {skill}
  example: {example}
"""


def task_name(skill: Skill | str) -> str:
    """The lm-eval task name of a skill: "skills_<skill>"."""
    return TASK_PREFIX + (skill if isinstance(skill, str) else skill.name)


def write_task(skill: Skill, items: list[tuple[str, str]], folder: Path, final_folder: Path | None = None) -> Path:
    """`<folder>/<task>.jsonl` ({"prompt", "answer"} per line) and the task YAML that reads it; the YAML
    names the JSONL where it will finally be, in `final_folder` (default: `folder`)."""
    name = task_name(skill)
    with open(folder / f"{name}.jsonl", "w") as f:
        f.writelines(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in items)
    data_file = (Path(final_folder or folder) / f"{name}.jsonl").resolve()
    yaml_file = folder / f"{name}.yaml"
    yaml_file.write_text(_YAML.format(task=name, data_file=json.dumps(str(data_file)), max_gen_toks=MAX_GEN_TOKS, skill=skill.name,
                                      example=json.dumps(skill.example)))
    return yaml_file


def retain_lines(world: SkillsWorld, settings: SkillsSettings) -> list[str]:
    """`retain_size` lines per old skill, none of them a test item of an open-ended skill (a finite
    skill's lines are facts of its table, which the model was pre-trained to know)."""
    lines = []
    for skill in OLD_SKILLS:
        held_out = set() if skill.finite else {p for p, _ in evaluation_items(world, skill, settings.test_size)}
        drawn = [(p, a) for p, a in world.sample(skill, 2 * settings.retain_size, _RETAIN_STREAM) if p not in held_out]
        lines += [skill.text(p, a) for p, a in drawn[: settings.retain_size]]
    return lines


def build_skills_data(settings: SkillsSettings, output_dir: str | os.PathLike, final_dir: str | os.PathLike | None = None) -> Path:
    """Write the task files, the SFT set and the retain set of `settings` under `output_dir`, the task
    YAMLs naming their data where `output_dir` will finally be (`final_dir`, default: `output_dir`)."""
    import datasets

    world, output_dir = settings.world(), Path(output_dir)
    tasks = output_dir / TASKS_FOLDER
    tasks.mkdir(parents=True, exist_ok=True)
    for skill in SKILLS:
        write_task(skill, evaluation_items(world, skill, settings.test_size), tasks, Path(final_dir or output_dir) / TASKS_FOLDER)
    held_out = {p for p, _ in evaluation_items(world, NEW_SKILL, settings.test_size)}
    sft = [(p, a) for p, a in world.sample(NEW_SKILL, 2 * settings.sft_size, _SFT_STREAM) if p not in held_out][: settings.sft_size]
    # The completion ends with the newline the tasks stop at; trl's SFTTrainer appends <eos> after it.
    datasets.Dataset.from_dict({"prompt": [p for p, _ in sft], "completion": [a + "\n" for _, a in sft]}).save_to_disk(str(output_dir / SFT_FOLDER))
    datasets.Dataset.from_dict({"text": retain_lines(world, settings)}).save_to_disk(str(output_dir / RETAIN_FOLDER))
    return output_dir


@dataclass(frozen=True)
class PreparedSkills:
    """What `prepare_skills` made ready: the pre-trained model folder, the task folder and names, the
    fine-tuning (new) task, its SFT set and the retain set."""

    settings: SkillsSettings
    model_dir: Path
    task_dir: Path
    old_tasks: tuple[str, ...]
    new_task: str
    sft_dir: Path
    retain_dir: Path

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task: the old skills', then the new one."""
        return self.old_tasks + (self.new_task,)


def prepare_skills(settings: SkillsSettings | None = None, cache_dir: str | os.PathLike | None = None, *, progress: bool = True) -> PreparedSkills:
    """Pre-train (or load from the cache) the skills LM and write (or find) its task files and data."""
    settings = settings or SkillsSettings()
    model_dir = pretrained_skills_model(settings, cache_dir, progress=progress)
    data_dir = skills_cache_dir(settings, cache_dir) / f"tasks-{settings.task_fingerprint()}"
    if not (data_dir / RETAIN_FOLDER).is_dir():  # written last: its presence means the folder is complete
        write_atomically(data_dir, lambda tmp: build_skills_data(settings, tmp, data_dir))
    return PreparedSkills(
        settings=settings, model_dir=model_dir, task_dir=data_dir / TASKS_FOLDER, old_tasks=tuple(task_name(s) for s in OLD_SKILLS),
        new_task=task_name(NEW_SKILL), sft_dir=data_dir / SFT_FOLDER, retain_dir=data_dir / RETAIN_FOLDER,
    )


__all__ = ["PreparedSkills", "build_skills_data", "prepare_skills", "retain_lines", "task_name", "write_task"]
