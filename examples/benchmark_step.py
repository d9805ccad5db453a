#!/usr/bin/env python
"""Time one training step of plain-Trainer CE, our CE, L2SP and LDIFS (and the official LDIFS style).

    python examples/benchmark_step.py --preset vit-b-32 --bf16 --batch_size 128 --output_json step_h100.json  # a GPU
    python examples/benchmark_step.py --preset small --batch_size 32 --threads 1 --output_json step_cpu.json   # CPU

Every variant runs the same thing on the same model shape, batch and precision: `trainer.training_step`
(forward, loss, backward, through the Trainer's accelerator like `Trainer.train` does) then
`optimizer.step()` and `optimizer.zero_grad()`. The variants:

- "CE, plain Trainer": `transformers.Trainer` with the model's own loss: the baseline of "vs CE";
- "CE, ours": `LDIFSTrainer` with regularizer "none";
- "L2SP, ours": `LDIFSTrainer` with regularizer "l2sp" (one foreach autograd node);
- "L2SP, per-parameter autograd": a plain Trainer adding sum((p - p0)**2) per parameter (reference);
- "LDIFS, ours": `LDIFSTrainer` with regularizer "ldifs" (taps from the one student forward);
- "LDIFS, ours, bf16 teacher": the same with `teacher_dtype="bfloat16"` (only with --bf16);
- "LDIFS, official style": a plain Trainer that runs the student a second time for its taps, as the
  paper's code does (reference).

Timing: each step is bracketed by device synchronisation (torch.cuda.synchronize on a GPU) and the
median over the timed steps is reported, after `--warmup` untimed steps. Each variant is built afresh
(same initial weights, its own optimizer and teacher) and freed before the next, so on a GPU its peak
memory (torch.cuda.max_memory_allocated, reset after the previous variant is freed) is its own. On CPU
peak memory is reported as n/a: the process's RSS high-water mark cannot be reset per variant.
Beside the steps, the parts LDIFS adds are timed alone (on the baseline's model, interleaved with the
steps when they are): the teacher's
forward (and with bf16 weights under --bf16) and the distance's forward and backward; their ratio to
CE is the share of a CE step they cost. `--profile NAME` adds torch.profiler's op table of one variant.
`--rounds R` runs the whole sequence R times and pools the steps, so a load change on a shared machine
hits every variant alike. Random weights: the timing does not depend on them.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import tempfile
import time
import warnings

import torch
import transformers
from transformers import CLIPVisionConfig, Trainer, TrainingArguments

from ldifs_hf.modeling import CLIPClassifierConfig, CLIPVisionClassifier, encoder_parameters
from ldifs_hf.regularizers import default_ldifs_layers, ldifs_distance
from ldifs_hf.training import LDIFSTrainer, LDIFSTrainingArguments
from ldifs_hf.utils import machine_metadata

PRESETS = {
    # CLIP ViT-B/32's vision tower: the shape of docs/PERFORMANCE.md's GPU targets.
    "vit-b-32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32),
    # Small enough for a CPU step in tens of milliseconds; 12 blocks so the taps are the official ones.
    # For the script's own test: a step in milliseconds.
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, image_size=32, patch_size=8),
    "small": dict(hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3, image_size=64, patch_size=16),
}
NUM_LABELS = 10
BASELINE = "CE, plain Trainer"
OURS_CE = "CE, ours"


class PerParameterL2SPTrainer(Trainer):
    """Reference: CE plus 0.5 * sum ||p - p0||^2 as an ordinary per-parameter autograd graph."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reference = [p.detach().clone() for p in encoder_parameters(self.model)]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        penalty = sum(((p - r) ** 2).sum() for p, r in zip(encoder_parameters(model), self.reference))
        loss = outputs.loss + 0.5 * penalty
        return (loss, outputs) if return_outputs else loss


class OfficialStyleLDIFSTrainer(Trainer):
    """Reference: LDIFS as the paper's code computes it, the student's taps from a second forward."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        teacher = copy.deepcopy(self.model.vision_model).requires_grad_(False).eval()
        self.teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)
        self.layers = default_ldifs_layers(self.model.config.vision_config.num_hidden_layers)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        student = model.vision_model(pixel_values=inputs["pixel_values"], output_hidden_states=True).hidden_states
        with torch.no_grad():
            teacher = self.teacher(pixel_values=inputs["pixel_values"], output_hidden_states=True).hidden_states
        loss = outputs.loss + 10.0 * ldifs_distance(student, teacher, self.layers)
        return (loss, outputs) if return_outputs else loss


def variants(bf16: bool) -> dict[str, tuple[type, dict]]:
    """name -> (trainer class, extra arguments of its TrainingArguments)."""
    table = {
        BASELINE: (Trainer, {}),
        OURS_CE: (LDIFSTrainer, {"regularizer": "none"}),
        "L2SP, ours": (LDIFSTrainer, {"regularizer": "l2sp"}),
        "L2SP, per-parameter autograd (reference)": (PerParameterL2SPTrainer, {}),
        "LDIFS, ours": (LDIFSTrainer, {"regularizer": "ldifs"}),
    }
    if bf16:
        table["LDIFS, ours, bf16 teacher"] = (LDIFSTrainer, {"regularizer": "ldifs", "teacher_dtype": "bfloat16"})
    table["LDIFS, official style (student twice, reference)"] = (OfficialStyleLDIFSTrainer, {})
    return table


def build_model(preset: str) -> CLIPVisionClassifier:
    vision = CLIPVisionConfig(**PRESETS[preset])
    config = CLIPClassifierConfig(vision_config=vision.to_dict(), projection_dim=512, num_labels=NUM_LABELS)
    return CLIPVisionClassifier(config)


def build_trainer(cls, extra: dict, initial_state: dict, preset: str, common: dict, output_dir: str) -> Trainer:
    """A fresh model with `initial_state`, its trainer, the model prepared by the trainer's accelerator
    (device placement and the autocast `Trainer.train` applies) and its optimizer."""
    model = build_model(preset)
    model.load_state_dict(initial_state)
    args_cls = LDIFSTrainingArguments if issubclass(cls, LDIFSTrainer) else TrainingArguments
    args = args_cls(output_dir=output_dir, **common, **extra)
    trainer = cls(model=model, args=args)
    trainer.model_wrapped = trainer.accelerator.prepare_model(trainer.model)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which is not run here
    return trainer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, warmup: int, steps: int, device: torch.device) -> list[float]:
    """Milliseconds of each of `steps` timed calls of `fn` after `warmup` untimed ones."""
    times = []
    for i in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return times


def training_step(trainer: Trainer, inputs: dict):
    """What `Trainer.train` does per batch without accumulation: forward, loss, backward, update."""

    def step():
        trainer.training_step(trainer.model_wrapped, inputs)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    return step


def components(trainer: Trainer, inputs: dict, device: torch.device, bf16: bool) -> dict:
    """name -> a call doing one part LDIFS adds to a step alone: the teacher's forward (a frozen copy of
    the student's tower in the student's dtype under the step's autocast, and with bf16 weights when
    training in bf16) and the distance's forward and backward on hidden states of the step's shape."""
    tower = trainer.accelerator.unwrap_model(trainer.model).vision_model
    teachers = {"teacher forward alone": copy.deepcopy(tower).requires_grad_(False).eval()}
    if bf16:
        teachers["teacher forward alone, bf16 weights"] = copy.deepcopy(tower).requires_grad_(False).eval().to(torch.bfloat16)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    pixel_values = inputs["pixel_values"]
    with torch.no_grad(), autocast:
        hidden = teachers["teacher forward alone"](pixel_values=pixel_values, output_hidden_states=True).hidden_states
    layers = default_ldifs_layers(len(hidden) - 1)
    student = [h.detach().clone().requires_grad_(True) for h in hidden]

    def teacher_forward(teacher):
        dtype = next(teacher.parameters()).dtype

        def forward():
            with torch.no_grad(), autocast:
                teacher(pixel_values=pixel_values.to(dtype), output_hidden_states=True)

        return forward

    calls = {name: teacher_forward(teacher) for name, teacher in teachers.items()}
    calls["LDIFS distance alone (forward + backward)"] = lambda: ldifs_distance(student, hidden, layers).backward()
    return calls


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def profile(trainer: Trainer, inputs: dict, steps: int, device: torch.device, row_limit: int = 25) -> str:
    """torch.profiler's table of the ops that take the most time over `steps` training steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    time_call(training_step(trainer, inputs), warmup=2, steps=0, device=device)
    with torch_profile(activities=activities) as prof:
        time_call(training_step(trainer, inputs), warmup=0, steps=steps, device=device)
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=row_limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each variant's timed steps")
    parser.add_argument("--rounds", type=int, default=1, help="sequential: repeat the sequence of variants; interleaved: steps x rounds steps each")
    parser.add_argument(
        "--schedule", choices=("auto", "interleaved", "sequential"), default="auto",
        help="interleaved: every variant built at once, one step of each in turn (robust to load on a shared CPU, "
        "no per-variant memory); sequential: one variant at a time (per-variant peak memory); auto: sequential on a GPU",
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (TrainingArguments.bf16), as on a GPU")
    parser.add_argument(
        "--torch_compile", action="store_true",
        help="TrainingArguments.torch_compile: the accelerator compiles every student and every teacher it prepares (use a larger --warmup)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants (names as printed)")
    parser.add_argument("--profile", default=None, help="also profile this variant (torch.profiler) and print the table")
    parser.add_argument("--profile_output", default=None, help="write the profile table here")
    parser.add_argument("--output_json", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    for name in ("batch_size", "steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 1:
        parser.error(f"--warmup must be >= 1 (the first step allocates the optimizer state), got {args.warmup}")

    # 1. Device, threads, precision.
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.bf16 and device.type == "cpu":
        warnings.warn("--bf16 on CPU measures CPU bf16 kernels, not the GPU setting the targets are for")
    schedule = args.schedule if args.schedule != "auto" else ("sequential" if device.type == "cuda" else "interleaved")
    common = dict(report_to="none", bf16=args.bf16, torch_compile=args.torch_compile, use_cpu=device.type == "cpu", per_device_train_batch_size=args.batch_size, disable_tqdm=True)
    table = variants(args.bf16)
    if args.only:
        unknown = [n for n in args.only if n not in table]
        if unknown:
            parser.error(f"unknown variant {unknown[0]!r}; variants: {list(table)}")
        table = {n: table[n] for n in table if n in args.only or n == BASELINE}
    if args.profile is not None and args.profile not in table:
        parser.error(f"--profile {args.profile!r} is not a variant; variants: {list(table)}")

    # 2. One set of initial weights and one batch, shared by every variant.
    torch.manual_seed(0)
    initial_state = {k: v.clone() for k, v in build_model(args.preset).state_dict().items()}
    size = PRESETS[args.preset]["image_size"]
    inputs = {
        "pixel_values": torch.randn(args.batch_size, 3, size, size, device=device),
        "labels": torch.randint(0, NUM_LABELS, (args.batch_size,), device=device),
    }

    # 3. Time every variant: step-interleaved (all built at once) or one variant after another.
    load_before = os.getloadavg()
    times = {name: [] for name in table}
    peaks = {name: [] for name in table}
    components_times: dict[str, list[float]] = {}
    profile_table = None
    with tempfile.TemporaryDirectory() as output_dir:
        if schedule == "interleaved":
            trainers = {name: build_trainer(cls, extra, initial_state, args.preset, common, output_dir) for name, (cls, extra) in table.items()}
            calls = {name: training_step(trainer, inputs) for name, trainer in trainers.items()}
            parts = components(trainers[BASELINE], inputs, device, args.bf16)
            components_times = {name: [] for name in parts}
            for i in range(args.warmup + args.steps * args.rounds):
                for name, call in [*calls.items(), *parts.items()]:
                    step_ms = time_call(call, 0, 1, device)
                    if i >= args.warmup:
                        (times if name in times else components_times)[name] += step_ms
            if args.profile is not None:
                profile_table = profile(trainers[args.profile], inputs, min(args.steps, 10), device)
            del trainers, calls, parts
        else:
            for _ in range(args.rounds):
                for name, (cls, extra) in table.items():
                    free(device)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    trainer = build_trainer(cls, extra, initial_state, args.preset, common, output_dir)
                    times[name] += time_call(training_step(trainer, inputs), args.warmup, args.steps, device)
                    if device.type == "cuda":
                        peaks[name].append(torch.cuda.max_memory_allocated(device) / 2**30)
                    if name == BASELINE:
                        for part, call in components(trainer, inputs, device, args.bf16).items():
                            components_times.setdefault(part, []).extend(time_call(call, args.warmup, args.steps, device))
                    if name == args.profile and profile_table is None:
                        profile_table = profile(trainer, inputs, min(args.steps, 10), device)
                    del trainer
    load_after = os.getloadavg()

    # 4. Report.
    results = {}
    for name, samples in [*times.items(), *components_times.items()]:
        median = statistics.median(samples)
        quartiles = statistics.quantiles(samples, n=4) if len(samples) > 1 else [median, median, median]
        results[name] = {
            "ms": median,
            "ms_q1": quartiles[0],
            "ms_q3": quartiles[2],
            "img_per_s": args.batch_size / median * 1000,
            "peak_gib": max(peaks[name]) if peaks.get(name) else None,
            "steps": len(samples),
        }
    base, ours = results[BASELINE], results.get(OURS_CE)
    for name, r in results.items():
        r["vs_ce"] = r["ms"] / base["ms"]
        if schedule == "interleaved":
            # Steps taken back to back share the machine's load: the median of their ratios is the
            # figure least moved by other processes.
            samples = times.get(name) or components_times[name]
            r["paired_vs_ce"] = statistics.median(t / b for t, b in zip(samples, times[BASELINE]))
        r["vs_our_ce"] = r["ms"] / ours["ms"] if ours else None
        r["peak_vs_ce"] = r["peak_gib"] / base["peak_gib"] if r["peak_gib"] and base["peak_gib"] else None

    meta = {
        **machine_metadata(device),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "preset": args.preset,
        "vision_config": PRESETS[args.preset],
        "batch_size": args.batch_size,
        "bf16": args.bf16,
        "torch_compile": args.torch_compile,
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
        "schedule": schedule,
        "timing": "median of per-step times, each step bracketed by device synchronisation",
        "peak_memory": "torch.cuda.max_memory_allocated per variant" if device.type == "cuda" else "n/a on CPU",
    }
    print(" ".join(f"{k}={v}" for k, v in meta.items() if k not in ("vision_config", "timing", "peak_memory")))
    print("| step | ms (median) | ms (q1-q3) | img/s | peak GiB | vs plain-Trainer CE | paired vs CE | vs our CE | peak vs CE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "n/a"
        peak_ratio = f"{r['peak_vs_ce']:.2f}" if r["peak_vs_ce"] is not None else "n/a"
        vs_ours = f"{r['vs_our_ce']:.3f}" if r["vs_our_ce"] is not None else "n/a"
        paired = f"{r['paired_vs_ce']:.3f}" if "paired_vs_ce" in r else "n/a"
        print(
            f"| {name} | {r['ms']:.1f} | {r['ms_q1']:.1f}-{r['ms_q3']:.1f} | {r['img_per_s']:.0f} | {peak} | "
            f"{r['vs_ce']:.3f} | {paired} | {vs_ours} | {peak_ratio} |"
        )
    if profile_table is not None:
        print(f"\nprofile of {args.profile!r}:\n{profile_table}")
        if args.profile_output:
            with open(args.profile_output, "w") as f:
                f.write(profile_table)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
