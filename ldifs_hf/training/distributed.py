"""Placing a frozen model (the LDIFS teacher) next to a student that accelerate distributes.

- DDP, FSDP, one device: `accelerator.prepare_model(evaluation_mode=True)` applies mixed precision but
  never wraps it for training (no DDP, no sharding: every process holds a whole copy). It is moved to
  the device explicitly, since accelerate leaves placement to the sharding under FSDP.
- DeepSpeed: accelerate cannot prepare a second model for evaluation, so the teacher gets its own
  inference engine, as trl prepares its reference models. Under ZeRO-3 the engine partitions it like the
  student (each process keeps a shard; the forward gathers layer by layer). Under ZeRO-0/1/2 a frozen
  model has no optimizer state or gradient to partition, so the engine runs at stage 0: a full copy on
  each process, moved and cast by DeepSpeed.

The engine's precision follows the teacher's dtype, never the other way round: a float32 teacher under
`--bf16` stays float32 (DeepSpeed would otherwise cast it to bfloat16, silently).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from accelerate.utils import DistributedType
from torch import nn

_PRECISION_KEYS = ("bf16", "bfloat16", "fp16")

L2SP_UNDER_ZERO3 = (
    "L2SP under DeepSpeed ZeRO-3 is not supported: the penalty reads every weight, which ZeRO-3 holds in shards; "
    "use ZeRO-2 (examples/accelerate_configs/deepspeed_zero2.json), DDP, or an LDIFS method"
)


def plain_model(accelerator, model: nn.Module) -> nn.Module:
    """`model` without what the accelerator wrapped it in (DDP, FSDP, DeepSpeed) and without `torch.compile`'s
    `OptimizedModule`: the model whose parameter names, modules and hooks the regularizers read."""
    model = accelerator.unwrap_model(model)
    return model._orig_mod if is_compiled(model) else model


def is_compiled(model: nn.Module) -> bool:
    """Whether `model` runs compiled by `torch.compile` (an `OptimizedModule`, or compiled in place by `model.compile()`)."""
    return isinstance(model, torch._dynamo.eval_frame.OptimizedModule) or getattr(model, "_compiled_call_impl", None) is not None


def deepspeed_stage(accelerator) -> int | None:
    """The ZeRO stage of the DeepSpeed config accelerate runs with, or None without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return None
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def teacher_deepspeed_config(student_config: dict, teacher_dtype: torch.dtype, hidden_size: int | None) -> dict:
    """The inference config for the frozen teacher, derived from the student's DeepSpeed config.

    Stage 3 stays 3, with buckets sized to the model as trl sizes them (the student's "auto" values are
    only filled in when its own engine starts); any other stage becomes 0, since ZeRO-1/2 partition
    optimizer state and gradients, which a frozen model has none of. Optimizer, scheduler and offload of
    optimizer state are dropped. Precision: bf16 or fp16 is enabled exactly when the teacher is stored in
    that dtype."""
    config = copy.deepcopy(student_config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    zero = dict(config.get("zero_optimization", {}))
    stage = int(zero.get("stage", 0))
    if stage == 3:
        zero.pop("offload_optimizer", None)
        if hidden_size is not None:
            for key, value in zero_bucket_sizes(hidden_size).items():
                if zero.get(key, "auto") == "auto":
                    zero[key] = value
        zero = {k: v for k, v in zero.items() if v != "auto"}
    else:
        zero = {"stage": 0}
    config["zero_optimization"] = zero
    for key in _PRECISION_KEYS:
        config.pop(key, None)
    if teacher_dtype == torch.bfloat16:
        config["bf16"] = {"enabled": True}
    elif teacher_dtype == torch.float16:
        config["fp16"] = {"enabled": True}
    # The engine wants a batch size even for inference; only the micro batch means anything to a
    # forward-only model (the global one is recomputed from it and the world size).
    micro = config.get("train_micro_batch_size_per_gpu")
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        config.pop(key, None)
    config["train_micro_batch_size_per_gpu"] = micro if isinstance(micro, int) else 1
    config.pop("gradient_clipping", None)
    return config


def _hidden_size(module: nn.Module) -> int | None:
    config = getattr(module, "config", None)
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return max(sizes)
    return getattr(config, "hidden_size", None)


def prepare_frozen_model(trainer, module: nn.Module) -> nn.Module:
    """`module` (frozen, in eval mode, already in the teacher's dtype) ready to run forward beside the
    student under the trainer's accelerator."""
    accelerator = trainer.accelerator
    stage = deepspeed_stage(accelerator)
    if stage is None:
        # Under FSDP accelerate leaves device placement to the sharding, which a frozen teacher does not get:
        # it would stay on the CPU. It is a plain module, so it is moved like one.
        fsdp = str(accelerator.distributed_type) == str(DistributedType.FSDP)
        return accelerator.prepare_model(module, device_placement=True if fsdp else None, evaluation_mode=True)
    import deepspeed  # present whenever accelerate runs DeepSpeed

    dtype = next(module.parameters()).dtype
    config = teacher_deepspeed_config(accelerator.state.deepspeed_plugin.deepspeed_config, dtype, _hidden_size(module))
    engine, *_ = deepspeed.initialize(model=module, config=config)
    engine.eval()
    return engine


# -- ZeRO-3: the run loads, evaluates and exports full weights -------------------------------------


@contextlib.contextmanager
def full_weights_loading():
    """Load models with every weight on every process, also when the run's DeepSpeed config is ZeRO-3.

    transformers otherwise loads under `deepspeed.zero.Init`, which partitions each weight at creation;
    but the run computes the zero-shot or linear-probe head and the teacher's copy from the loaded model
    before training starts. DeepSpeed partitions the student (and the teacher's engine) when the Trainer
    starts them, so ZeRO-3 still shards parameters, gradients and optimizer state during training."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    config = ref() if ref is not None else None
    if config is None or not hf_deepspeed.is_deepspeed_zero3_enabled():
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def args_deepspeed_config(training_args) -> dict | None:
    """The DeepSpeed config a run was given: `--deepspeed` (transformers parses it) or `accelerate launch`
    with a DeepSpeed config (accelerate's plugin), or None without DeepSpeed."""
    config = getattr(training_args, "hf_deepspeed_config", None)
    if config is not None:
        return config.config
    plugin = getattr(training_args, "deepspeed_plugin", None)
    return plugin.deepspeed_config if plugin is not None else None


def args_zero_stage(training_args) -> int | None:
    """The ZeRO stage of the run's DeepSpeed config, or None without DeepSpeed."""
    config = args_deepspeed_config(training_args)
    if config is None:
        return None
    return int(config.get("zero_optimization", {}).get("stage", 0))


def check_deepspeed_args(training_args) -> None:
    """What a DeepSpeed run needs from its config, checked before anything is loaded."""
    stage = args_zero_stage(training_args)
    if stage != 3:
        return
    zero = args_deepspeed_config(training_args).get("zero_optimization", {})
    if zero.get("stage3_gather_16bit_weights_on_model_save") is not True:
        raise ValueError(
            "ZeRO-3 keeps each weight in shards, and this run exports the fine-tuned weights as a CLIPModel: set "
            '"stage3_gather_16bit_weights_on_model_save": true in zero_optimization (as examples/accelerate_configs/'
            "deepspeed_zero3.json does)"
        )
    if training_args.regularizer == "l2sp":
        raise ValueError(L2SP_UNDER_ZERO3)


def zero_bucket_sizes(hidden_size: int) -> dict[str, int]:
    """ZeRO's bucket sizes for a model of width `hidden_size`, as transformers and trl size them."""
    return {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }


def fill_zero_buckets(trainer, hidden_size: int) -> None:
    """Fill ZeRO's "auto" bucket sizes from the width of the model's towers, as transformers fills them
    from `config.hidden_size`, which our classifier's config does not have (it fails on "auto" otherwise)."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    values = zero_bucket_sizes(hidden_size)
    configs = {id(c): c for c in (plugin.deepspeed_config, getattr(getattr(plugin, "hf_ds_config", None), "config", None)) if c is not None}
    for config in configs.values():
        zero = config.setdefault("zero_optimization", {})
        for key, value in values.items():
            if zero.get(key) == "auto":
                zero[key] = value
