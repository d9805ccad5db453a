"""One fine-tuning run end to end, as a library call that returns its `RunRecord`.

    record = finetune(method="lp-init-ldifs", dataset="eurosat", output_dir="runs/eurosat-lp-ldifs",
                      model_name_or_path="openai/clip-vit-base-patch32", bf16=True)

Steps: check the arguments and the output directory (and the Hub, with push_to_hub) before anything
expensive; load the benchmark and the pretrained CLIP; build the model the method trains (ZS or LP
head, or CLIP itself for FLYP); train with `LDIFSTrainer`; measure A_FT; export a stock `CLIPModel`;
write the model cards and the run record; push. Rerunning on the same output directory continues
from its last checkpoint, and a finished run is returned as recorded, not redone.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os

from dataclasses import dataclass

import datasets
import torch
from transformers import CLIPModel, CLIPProcessor, HfArgumentParser, TrainerCallback

from ..benchmarks import LoadedBenchmark, get_benchmark, image_transform, load_benchmark, parse_benchmark_list
from ..benchmarks.transforms import TrainImageTransform
from ..heads import extract_features, zero_shot_classifier
from ..model_folder import FINETUNE_PURPOSE, check_model_files, clip_config, load_clip_model, load_clip_processor, looks_like_hub_id, not_a_hub_id
from ..modeling import export_clip_model
from ..run_folder import EXPORT_FOLDER, TRAINER_STATE, FolderLock, OutputPlan, RunRecord, plan_output_dir, write_failures_explained
from ..interpolation import save_start_head
from .arguments import FINETUNE_ARGUMENTS, DataArguments, LDIFSTrainingArguments, ModelArguments
from .build import build_collator, build_model
from .methods import MethodSpec
from .guards import NonFiniteGuard, RunIdentityCallback
from .preflight import check_splits, preflight
from .distributed import args_zero_stage, deepspeed_stage, fill_zero_buckets, full_weights_loading
from .terms import get_regularizer
from .trainer import LDIFSTrainer

logger = logging.getLogger(__name__)

# The arguments that decide what a run computes (not where or how often it logs or saves); with them, the
# settings of the run's regularizer, as it records them.
_MODEL_SETTINGS = ("model_name_or_path", "reference_model_name_or_path", "lp_solver", "lp_iterations")
_DATA_SETTINGS = ("dataset_path", "image_column", "label_column", "max_train_samples", "validation_fraction", "validation_seed", "train_augmentation")
_TRAINING_SETTINGS = (
    "learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay", "warmup_steps", "lr_scheduler_type", "max_grad_norm", "seed", "bf16", "fp16", "regularizer",
)


def run_settings(model_args: ModelArguments, data_args: DataArguments, training_args: LDIFSTrainingArguments) -> dict:
    """The arguments that decide a run's result, as recorded in `RunRecord.settings` (JSON values): the ones named
    above and each setting of the run's regularizer (its `record`: its weight and the rest, a plug-in's too)."""
    settings = {}
    for args, names in ((model_args, _MODEL_SETTINGS), (data_args, _DATA_SETTINGS), (training_args, _TRAINING_SETTINGS)):
        for name in names:
            value = getattr(args, name, None)
            settings[name] = list(value) if isinstance(value, tuple) else (str(value) if hasattr(value, "value") else value)
    regularizer = get_regularizer(training_args.regularizer)
    own = regularizer.record(training_args.regularizer_settings)
    clash = sorted(set(own) & set(settings))
    if clash:
        raise ValueError(f"regularizer {regularizer.name!r} has a setting named like a run setting: {clash[0]!r}; rename it")
    settings.update(own)
    # The same per-device batch on another number of processes is another run (the global batch decides
    # the result): a resume with either changed is refused, naming both values.
    settings["world_size"] = training_args.world_size
    settings["global_train_batch_size"] = (
        training_args.per_device_train_batch_size * training_args.world_size * training_args.gradient_accumulation_steps
    )
    return settings


class AugmentationEpoch(TrainerCallback):
    """Tells the training augmentation which epoch it is in (a resumed run included), so every epoch
    gets fresh crops and a resumed run gets the crops the uninterrupted run had."""

    def __init__(self, augmentation: TrainImageTransform):
        self.augmentation = augmentation

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.augmentation.set_epoch(int(state.epoch + 1e-6))
        return control


def with_benchmark_epochs(data_args: DataArguments, training_args: LDIFSTrainingArguments) -> LDIFSTrainingArguments:
    """The arguments a run trains with: the paper's epoch count for the benchmark, unless the user gave
    epochs or max_steps. A changed value comes in a copy: the caller's arguments are never rewritten."""
    if data_args.epochs_from_benchmark and training_args.max_steps <= 0 and data_args.dataset != "custom":
        return _resolved(training_args, num_train_epochs=get_benchmark(data_args.dataset).epochs)
    return training_args


def _resolved(training_args: LDIFSTrainingArguments, **values) -> LDIFSTrainingArguments:
    """A shallow copy of parsed arguments with values this run settles itself (not `dataclasses.replace`,
    which would run `TrainingArguments.__post_init__` again on values it already processed)."""
    resolved = copy.copy(training_args)
    for name, value in values.items():
        setattr(resolved, name, value)
    return resolved


def finetune_arguments(kwargs: dict) -> tuple[ModelArguments, DataArguments, LDIFSTrainingArguments]:
    """The three argument objects from keyword arguments; epochs given explicitly take the place of the
    benchmark's, settled before the arguments are built."""
    if "num_train_epochs" in kwargs and "epochs_from_benchmark" not in kwargs:
        kwargs = {**kwargs, "epochs_from_benchmark": False}
    return finetune_parser().parse_dict(kwargs)


@dataclass
class _Run:
    """One run's arguments and what its checks settled, handed from step to step."""

    model_args: ModelArguments
    data_args: DataArguments
    training_args: LDIFSTrainingArguments  # with the benchmark's epochs (`with_benchmark_epochs`)
    spec: MethodSpec
    benchmark_name: str
    settings: dict  # `run_settings`: what the record stores and a resume must match
    forgetting_benchmarks: list[str]
    repo_id: str | None  # the Hub repo the export is pushed to (None: no push)

    @property
    def output_dir(self) -> str:
        return self.training_args.output_dir


@dataclass
class _RunData:
    """The benchmark with its splits made ready for the trainer: the datasets each step reads."""

    benchmark: LoadedBenchmark
    train: datasets.Dataset  # through the training augmentation, when the run has one
    eval: datasets.Dataset
    probe: datasets.Dataset  # the LP-init probe's data (train and validation, the eval transform)
    augmentation: TrainImageTransform | None
    has_validation: bool


def run_finetune(model_args: ModelArguments, data_args: DataArguments, training_args: LDIFSTrainingArguments) -> RunRecord:
    """Fine-tune, measure, export and record one run; see the module docstring."""
    run = _checked_run(model_args, data_args, training_args)
    # One writer per folder: a second command on it is refused here, before anything is loaded. The
    # main process holds the lock for the whole run (the others are its own processes).
    with FolderLock(run.output_dir) if training_args.process_index == 0 else contextlib.nullcontext():
        return _run_in_folder(run)


def _checked_run(model_args: ModelArguments, data_args: DataArguments, training_args: LDIFSTrainingArguments) -> _Run:
    """1. Everything that can be checked before loading data or models, and what the checks settle."""
    if training_args.method is None:
        raise ValueError("a fine-tuning run needs a method (--method); `ldifs-hf list` (or ldifs_hf.list_methods()) lists them")
    spec = training_args.method_spec
    benchmark_name = data_args.dataset if data_args.dataset == "custom" else get_benchmark(data_args.dataset).name
    forgetting_benchmarks = parse_benchmark_list(data_args.forgetting_benchmarks) if data_args.forgetting_benchmarks else []
    if forgetting_benchmarks and args_zero_stage(training_args) == 3:
        raise ValueError(
            "--forgetting_benchmarks scores the model on the main process during training, which ZeRO-3 holds in shards; "
            "drop it and score the saved checkpoints afterwards with `ldifs-hf evaluate`, or use ZeRO-2 or DDP"
        )
    preflight(model_args, training_args)  # creates and removes nothing, unlike plan_output_dir's overwrite
    check_model_and_taps(model_args, training_args)
    repo_id = None
    if training_args.push_to_hub:
        from ..hub import check_push_target

        repo_id = check_push_target(
            training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir)), training_args.hub_token
        )
    training_args = with_benchmark_epochs(data_args, training_args)  # before the settings: the epochs a run trains are recorded
    return _Run(
        model_args, data_args, training_args, spec, benchmark_name, run_settings(model_args, data_args, training_args),
        forgetting_benchmarks, repo_id,
    )


def _run_in_folder(run: _Run) -> RunRecord:
    """`run_finetune` once its checks passed and its folder is held: its steps, in order."""
    plan = _plan_folder(run)
    if plan.finished is not None:
        logger.warning(
            "%s already holds this finished run (same method, data and settings): nothing was trained, its record is returned "
            "(pass --overwrite_output_dir to train it again)", run.output_dir,
        )
        return plan.finished
    logger.setLevel(run.training_args.get_process_log_level())
    logger.info("method %s (%s)", run.spec.name, run.spec)
    benchmark = _load_benchmark(run)
    clip_model, processor = load_clip(run.model_args.model_name_or_path, run.model_args.cache_dir)
    data = _run_data(run, benchmark, processor)
    model = _model(run, data, clip_model, processor)
    trainer = _trainer(run, data, model, clip_model, processor)
    record = _run_record(run, data, trainer)
    _start_folder(run, trainer, record, model)
    if run.forgetting_benchmarks:
        _attach_forgetting_callback(trainer, run, clip_model, processor, record.dataset)
    train_or_resume(trainer, plan.resume_from, run.output_dir)
    if not trainer.is_world_process_zero():
        return record
    # under ZeRO-3, models loaded here are whole, not sharded
    with full_weights_loading(), write_failures_explained(run.output_dir):
        return _finish_run(run, trainer, record, data, processor)


def _plan_folder(run: _Run) -> OutputPlan:
    """Resume, reuse or overwrite the folder. Only now, with every check passed, may an overwrite remove
    the earlier run. The main process plans (and removes) first: the others then find nothing left to
    remove, so only one process deletes."""
    model_args, data_args, training_args = run.model_args, run.data_args, run.training_args
    with training_args.main_process_first(desc="output directory"):
        return plan_output_dir(
            training_args.output_dir, run.spec.name, run.benchmark_name,
            overwrite=training_args.overwrite_output_dir, resume_from_checkpoint=training_args.resume_from_checkpoint,
            settings=run.settings,
            inputs={
                "--model_name_or_path": model_args.model_name_or_path,
                "--reference_model_name_or_path": model_args.reference_model_name_or_path,
                "--dataset_path": data_args.dataset_path,
            },
        )


def _load_benchmark(run: _Run) -> LoadedBenchmark:
    """2. Data: the benchmark's train/validation/test splits, class names and prompt templates."""
    data_args = run.data_args
    benchmark = load_benchmark(
        data_args.dataset,
        data_path=data_args.dataset_path,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
        validation_fraction=data_args.validation_fraction,
        seed=data_args.validation_seed,
        cache_dir=run.model_args.cache_dir,
    )
    # An empty validation split is fine when nothing evaluates on it: A_FT is then measured on test only.
    check_splits(benchmark.splits, benchmark.spec.name, validation_needed=run.training_args.eval_strategy != "no")
    return benchmark


def _run_data(run: _Run, benchmark: LoadedBenchmark, processor: CLIPProcessor) -> _RunData:
    """3. The splits seen through the pretrained CLIP's image transform (and the training augmentation)."""
    transform = image_transform(processor.image_processor)
    for split in benchmark.splits.values():
        split.set_transform(transform)
    # The official protocol: the training images are augmented, the teacher sees the same pixels.
    train_dataset, augmentation = benchmark.splits["train"], None
    if run.data_args.train_augmentation:
        augmentation = TrainImageTransform(processor.image_processor, seed=run.training_args.seed)
        train_dataset = train_dataset.with_transform(augmentation)
    # The LP-init probe, as in the official protocol, is refitted on all of train (the run's train and
    # validation rows; its learning rate is chosen on a 90/10 split of them), seen through the eval transform.
    probe = datasets.concatenate_datasets([benchmark.splits["train"], benchmark.splits["validation"]]).with_transform(transform)
    return _RunData(
        benchmark, train_dataset, benchmark.splits["validation"], probe, augmentation,
        has_validation=len(benchmark.splits["validation"]) > 0,
    )


def _model(run: _Run, data: _RunData, clip_model: CLIPModel, processor: CLIPProcessor):
    """4. The model the method trains: a ZS or LP head over the vision tower, or CLIP itself (FLYP)."""
    benchmark = data.benchmark
    with run.training_args.main_process_first(desc="head initialisation"), full_weights_loading():
        return build_model(
            run.spec, clip_model, processor.tokenizer, benchmark.class_names, benchmark.templates, data.probe,
            lp_solver=run.model_args.lp_solver, lp_iterations=run.model_args.lp_iterations, seed=run.training_args.seed,
        )


def _trainer(run: _Run, data: _RunData, model, clip_model: CLIPModel, processor: CLIPProcessor) -> LDIFSTrainer:
    """The trainer of `model`, with the method's collator. The Hub push is the run's own (a stock
    CLIPModel, in `_finish_run`), not the Trainer's classifier."""
    spec, benchmark, training_args = run.spec, data.benchmark, run.training_args
    collator = build_collator(spec, processor.tokenizer, benchmark.class_names, benchmark.templates, seed=training_args.seed)
    trainer = LDIFSTrainer(
        model=model,
        args=_resolved(training_args, push_to_hub=False),
        train_dataset=data.train,
        eval_dataset=data.eval if training_args.eval_strategy != "no" else None,
        data_collator=collator,
        processing_class=processor,
        callbacks=[AugmentationEpoch(data.augmentation)] if data.augmentation is not None else None,
        teacher_model=_reference_model(run.model_args, training_args),
    )
    fill_zero_buckets(trainer, max(clip_model.config.vision_config.hidden_size, clip_model.config.text_config.hidden_size))
    return trainer


def _run_record(run: _Run, data: _RunData, trainer: LDIFSTrainer) -> RunRecord:
    """The run's record as it starts: what runs, on which data, with which regularizer (its results,
    export and completion are added by `_finish_run`)."""
    training_args = run.training_args
    return RunRecord(
        method=run.spec.name,
        dataset=data.benchmark.spec.name,
        base_model=run.model_args.model_name_or_path,
        **trainer.regularizer_record(),
        dataset_splits=_dataset_splits(run.data_args, data),
        text_tower="fine-tuned (FLYP)" if run.spec.uses_text_tower else "pretrained",
        output_dir=training_args.output_dir,
        settings=run.settings,
        method_spec={"head_init": run.spec.head_init, "objective": run.spec.objective, "regularizer": training_args.regularizer,
                     "trained": run.spec.trained},
    )


def _dataset_splits(data_args: DataArguments, data: _RunData) -> str:
    """Which data each split used, in words (`RunRecord.dataset_splits`)."""
    spec, splits = data.benchmark.spec, data.benchmark.splits
    if data.has_validation:
        text = "train minus a {:.0%} validation split (seed {}), test = '{}'".format(
            data_args.validation_fraction, data_args.validation_seed, spec.test_split
        )
    else:
        text = f"all of train (no validation split), test = '{spec.test_split}'"
    text += "; {} train / {} validation / {} test images used".format(*(len(splits[k]) for k in ("train", "validation", "test")))
    if data_args.dataset_path:
        text += f"; from the local copy {data_args.dataset_path}"
    if spec.split_note:
        text += (f"; if that is a copy of {spec.hub_id}: " if data_args.dataset_path else "; ") + spec.split_note
    return text


def _start_folder(run: _Run, trainer: LDIFSTrainer, record: RunRecord, model) -> None:
    """The guards, and the record in every checkpoint; the folder marked as this run's before the first
    checkpoint, with the start of a weight-space interpolation."""
    # Raises at the first non-finite loss term, before NaN weights are saved; so nothing below runs.
    trainer.add_callback(NonFiniteGuard(trainer))
    trainer.add_callback(RunIdentityCallback(record))
    if trainer.is_world_process_zero():
        os.makedirs(run.output_dir, exist_ok=True)
        record.save(run.output_dir)
        save_start_head(model, run.output_dir)  # θ_start of a weight-space interpolation (ldifs_hf.interpolate)


def train_or_resume(trainer, resume_from: str | None, output_dir: str) -> None:
    """5. Train, continuing from `resume_from` (a checkpoint of this run) when given; then save the final
    model, the train metrics and the state into `output_dir` (any Trainer: a language run's SFT too)."""
    if resume_from:
        logger.info("continuing from %s", resume_from)
    finished_training = resume_from is not None and _finished_training(resume_from)
    if finished_training and not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        # Training had ended (a kill during the export or the cards): the Trainer would train one more
        # step past max_steps when resumed from its final checkpoint, so its weights are loaded instead.
        logger.info("training had finished at %s: its weights are loaded, no step is trained again", resume_from)
        trainer._load_from_checkpoint(resume_from)
        _save_training(trainer, None, output_dir)
        return
    if finished_training:  # sharded weights load only through the Trainer's resume
        logger.warning(
            "training had finished at %s; under DeepSpeed or FSDP its sharded weights load only through the Trainer's "
            "resume, which trains one step past max_steps", resume_from,
        )
    with write_failures_explained(output_dir):
        train_result = trainer.train(resume_from_checkpoint=resume_from)
        _save_training(trainer, train_result, output_dir)


def _save_training(trainer, train_result, output_dir: str) -> None:
    """The final model, the train metrics and the trainer state, as the Trainer's examples save them.

    `train_result` None: this process trained no step (training had finished before it). Then the real
    metrics and state that the earlier process saved are kept rather than replaced, and none are made up."""
    if train_result is None and os.path.isfile(os.path.join(output_dir, "train_results.json")):
        return  # the earlier process saved the final model, its metrics and state, in that order
    trainer.save_model()
    if train_result is None:
        logger.warning(
            "training had finished before this rerun, but its train metrics were not saved then; this process trained no step, "
            "so train_results.json is not written"
        )
        return
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()


def _finished_training(checkpoint: str) -> bool:
    """The checkpoint is the run's last step (the Trainer records both in its state)."""
    with open(os.path.join(checkpoint, TRAINER_STATE)) as f:
        state = json.load(f)
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def _finish_run(run: _Run, trainer: LDIFSTrainer, record: RunRecord, data: _RunData, processor: CLIPProcessor) -> RunRecord:
    """6. On the main process, after training: A_FT, the stock-CLIP export, the cards, the completed
    record; then the push. Returns the completed record."""
    training_args, benchmark = run.training_args, data.benchmark
    # A_FT: the fine-tuned classifier's accuracy on its own task, on validation and test.
    trained = trained_model(trainer, training_args.output_dir)
    batch_size = training_args.per_device_eval_batch_size
    results = {}
    if data.has_validation:
        results["validation_accuracy"] = finetune_accuracy(trained, data.eval, processor.tokenizer, benchmark, batch_size)
    results["test_accuracy"] = finetune_accuracy(trained, benchmark.splits["test"], processor.tokenizer, benchmark, batch_size)
    trainer.log_metrics("eval", results)
    trainer.save_metrics("eval", results)

    # The encoder as a stock CLIPModel, the two model cards, the record; then the push.
    export_dir = os.path.join(training_args.output_dir, EXPORT_FOLDER)
    export_clip_model(trained, run.model_args.model_name_or_path, export_dir)
    record = dataclasses.replace(record, results=results, export_dir=export_dir, completed=True)
    from ..cards import write_model_cards
    from ..hub import push_clip_to_hub

    write_model_cards(
        training_args.output_dir, export_dir, record, repo_id=run.repo_id or training_args.hub_model_id,
        # A local copy may hold anything: the card links the Hub dataset only when the run read it.
        dataset_id=None if run.data_args.dataset_path else benchmark.spec.hub_id, license=run.model_args.model_license,
    )
    record.save(training_args.output_dir)
    if training_args.push_to_hub:
        url = push_clip_to_hub(export_dir, run.repo_id, token=training_args.hub_token, private=training_args.hub_private_repo)
        logger.info("pushed %s to %s", export_dir, url)
    return record


def check_model_and_taps(model_args: ModelArguments, training_args: LDIFSTrainingArguments) -> None:
    """From the models' files alone (cheap, before any data loads): the base and reference models exist,
    are CLIPs saved whole (`model_folder.check_model_files`), and the regularizer can serve the base model (LDIFS's taps fit)."""
    config = _checked_clip(model_args.model_name_or_path, "model_name_or_path", model_args.cache_dir)
    if model_args.reference_model_name_or_path is not None and training_args.regularizer != "none":
        reference = _checked_clip(model_args.reference_model_name_or_path, "reference_model_name_or_path", model_args.cache_dir)
        differ = [f"{k} {getattr(reference.vision_config, k)} vs {getattr(config.vision_config, k)}" for k in _ENCODER_SHAPE
                  if getattr(reference.vision_config, k, None) != getattr(config.vision_config, k, None)]
        differ += [f"projection_dim {reference.projection_dim} vs {config.projection_dim}"] if reference.projection_dim != config.projection_dim else []
        if differ:
            raise ValueError(
                f"reference_model_name_or_path {model_args.reference_model_name_or_path!r} has another image encoder than the model the run "
                f"trains ({', '.join(differ)}); the teacher and the anchor must be that model's architecture"
            )
    get_regularizer(training_args.regularizer).check_model_config(training_args.regularizer_settings, config)


# What fixes the shapes of an image encoder's weights and hidden states.
_ENCODER_SHAPE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size", "num_channels")


def _checked_clip(name: str, what: str, cache_dir: str | None):
    """The CLIPConfig of the model `what` names, its folder's files checked; a missing local path is never taken for a Hub id."""
    if os.path.islink(name) and not os.path.exists(name):
        raise OSError(f"could not load CLIP model {name!r}: it is a symbolic link that leads nowhere (broken, or a loop)")
    if not os.path.exists(name) and not looks_like_hub_id(name):
        raise OSError(f"could not load CLIP model {name!r} ({what}): that path does not exist (and it is not a Hub id: {not_a_hub_id(name)})")
    try:
        config = clip_config(name, what=what, purpose=FINETUNE_PURPOSE, cache_dir=cache_dir)
    except OSError as err:  # a Hub id that is neither cached nor downloadable
        where = f" as a Hub id (no local directory {name!r} exists)"
        raise OSError(
            f"could not load CLIP model {name!r}{where}: download it first (`hf download {name}`) "
            f"or pass a local directory ({' '.join(str(err).split())[:300]})"
        ) from err
    check_model_files(name, what=what)
    return config


def _reference_model(model_args: ModelArguments, training_args: LDIFSTrainingArguments) -> CLIPModel | None:
    """The CLIP given as `reference_model_name_or_path` (the trainer's `teacher_model=`), or None: the
    trainer then anchors at the model the run starts from."""
    name = model_args.reference_model_name_or_path
    if name is None:
        return None
    if training_args.regularizer == "none":
        logger.warning("reference model %s is not used: method %s has no regularizer", name, training_args.method)
        return None
    return load_clip(name, model_args.cache_dir, what="reference_model_name_or_path")[0]


def trained_model(trainer, output_dir: str):
    """The fine-tuned model with every weight in memory, for A_FT and the export (on the main process).

    Under DeepSpeed ZeRO-3 the trainer's model holds only this process's shards, so the weights are read
    back from what `save_model` gathered into `output_dir`; otherwise it is the trainer's model itself."""
    if deepspeed_stage(trainer.accelerator) != 3:
        return trainer.model
    model = trainer.accelerator.unwrap_model(trainer.model)
    with full_weights_loading():
        return type(model).from_pretrained(output_dir).to(trainer.args.device)


def load_clip(name_or_path: str, cache_dir: str | None = None, what: str = "model_name_or_path") -> tuple[CLIPModel, CLIPProcessor]:
    """The pretrained CLIPModel and its processor, with an error that says how to get them offline.
    All weights are loaded on every process, also under ZeRO-3 (see `full_weights_loading`)."""
    try:
        with full_weights_loading():
            model = load_clip_model(name_or_path, what=what, purpose=FINETUNE_PURPOSE, cache_dir=cache_dir)
        bad = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:  # it would fail at step 1 as a NaN loss, blaming the learning rate
            raise ValueError(f"{what} {name_or_path!r} is not finite (weight {bad} holds NaN or inf); save or download it again")
        return model, load_clip_processor(name_or_path, cache_dir=cache_dir, what=what)
    except OSError as err:
        raise OSError(
            f"could not load CLIP model {name_or_path!r}: download it first (`hf download {name_or_path}`) "
            f"or pass a local directory ({' '.join(str(err).split())[:300]})"
        ) from err


def finetune_accuracy(model, dataset, tokenizer, benchmark, batch_size: int = 256) -> float:
    """A_FT of a just-trained model on one split (`evaluation.evaluator.own_head_accuracy`). A FLYP model
    is scored with its own fine-tuned text tower, unlike the official code (see `ldifs_hf.heads`)."""
    from ..evaluation.evaluator import own_head_accuracy

    features, labels = extract_features(model, dataset, batch_size=batch_size, desc="accuracy")
    return own_head_accuracy(
        model, features, labels, lambda: zero_shot_classifier(model, tokenizer, benchmark.class_names, benchmark.templates),
        len(benchmark.class_names), benchmark.spec.name,
    )


def _attach_forgetting_callback(trainer, run: _Run, clip_model, processor, finetune_name: str) -> None:
    from ..evaluation import ConceptForgettingCallback, ConceptForgettingEvaluator

    model_args, data_args, benchmarks = run.model_args, run.data_args, run.forgetting_benchmarks
    settings = data_args.forgetting_settings(
        finetune_name, lp_solver=model_args.lp_solver, lp_iterations=model_args.lp_iterations, cache_dir=model_args.cache_dir,
    )
    if run.spec.head_init:  # the classifier copied the tower: clip_model stays the pretrained model
        evaluator = ConceptForgettingEvaluator(clip_model, processor, settings)
    else:  # FLYP trains clip_model itself, so the reference is a fresh copy
        evaluator = ConceptForgettingEvaluator.from_pretrained(model_args.model_name_or_path, settings, processor=processor)
    trainer.add_callback(
        ConceptForgettingCallback(
            evaluator, benchmarks, every_percent=data_args.forgetting_every_percent,
            finetune_benchmark=finetune_name if finetune_name in benchmarks else None, trainer=trainer, method=run.spec.name,
        )
    )


def finetune_parser() -> HfArgumentParser:
    return HfArgumentParser(FINETUNE_ARGUMENTS)


def finetune(**kwargs) -> RunRecord:
    """`run_finetune` from keyword arguments: any field of `ModelArguments`, `DataArguments` or
    `LDIFSTrainingArguments` (e.g. method=, dataset=, output_dir=, model_name_or_path=, max_steps=);
    `output_dir` is required, as on the command line (the Trainer's default folder is no run's)."""
    if not kwargs.get("output_dir"):
        raise ValueError("finetune() needs output_dir=: the folder the run writes its checkpoints, model and record to")
    return run_finetune(*finetune_arguments(kwargs))
