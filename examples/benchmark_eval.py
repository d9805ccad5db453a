#!/usr/bin/env python
"""Time the evaluation of one checkpoint on the nine benchmarks, with and without the feature cache.

    python examples/benchmark_eval.py --preset vit-b-32 --num_train 1024 --num_test 512 --num_workers 8 \\
        --batch_size 1024 --repeats 2 --profile --output_json eval_gpu.json                # a GPU
    python examples/benchmark_eval.py --preset tiny --num_train 64 --num_test 32 --output_json eval_cpu.json  # CPU

Random weights and generated data: every benchmark is written by `ldifs_hf.testing.save_benchmark_like_dataset`
in its hub copy's schema, with images at roughly the benchmark's native size (MNIST 28 px greyscale,
CIFAR/SVHN 32 px, EuroSAT 64 px, RESISC45 256 px, ...), so decoding and resizing cost what they cost
on the real data; the number of images is `--num_train`/`--num_test` per benchmark, not the real sizes.

Measured, in one process:
1. feature extraction, model only: images already preprocessed and on the device, at `--batch_size`,
   in float32 and under bf16 autocast (the device's ceiling);
2. feature extraction through the evaluator's pipeline (decode, resize, normalise on the CPU in
   `--num_workers` processes, then the model): img/s over every split of the nine benchmarks;
3. the wall time to score one checkpoint (ZS, LP, A_FT, distances) on the nine benchmarks, including
   the pretrained model's accuracies it is compared with: on the first run with the feature cache
   (which fills it), then `--repeats` times alternately without it and reading it (as runs 2..N of
   a study do); medians are reported.
An untimed run first loads every benchmark once, so `datasets`' own caches are warm for all three.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time

import datasets
import torch
from transformers import CLIPConfig, CLIPModel, CLIPProcessor

from ldifs_hf.benchmarks.catalog import NINE
from ldifs_hf.benchmarks.registry import fill_templates
from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluatorSettings
from ldifs_hf.heads import extract_features
from ldifs_hf.modeling import CLIPVisionClassifier, encode_images
from ldifs_hf.testing import save_benchmark_like_dataset
from ldifs_hf.tiny import tiny_image_processor, train_clip_tokenizer
from ldifs_hf.utils import machine_metadata

# (image side in pixels, PIL mode): about each benchmark's native size (DTD, Cars and GTSRB vary).
NATIVE = {
    "cars": (360, "RGB"), "cifar10": (32, "RGB"), "cifar100": (32, "RGB"), "dtd": (300, "RGB"), "eurosat": (64, "RGB"),
    "gtsrb": (48, "RGB"), "mnist": (28, "L"), "resisc45": (256, "RGB"), "svhn": (32, "RGB"),
}
PRESETS = {
    # CLIP ViT-B/32: the model of the paper's study.
    "vit-b-32": dict(
        image_size=224,
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=32),
        text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        projection_dim=512,
    ),
    # A CPU-sized CLIP at 64 px: resizing still happens for every benchmark but MNIST/CIFAR/SVHN go up.
    "tiny": dict(
        image_size=64,
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2, patch_size=16),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        projection_dim=32,
    ),
}


def build_clip(preset: str, output_dir: str) -> str:
    """A randomly initialised CLIP of the preset's shape, with a tokenizer trained on the nine benchmarks' prompts."""
    p = PRESETS[preset]
    prompts = [prompt for spec in NINE for name in spec.class_names for prompt in fill_templates(name, spec.templates[:2])]
    tokenizer = train_clip_tokenizer(prompts, vocab_size=2048)
    tokenizer.model_max_length = 77
    text = dict(
        p["text"], vocab_size=len(tokenizer), max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config = CLIPConfig(text_config=text, vision_config=dict(p["vision"], image_size=p["image_size"]), projection_dim=p["projection_dim"])
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(output_dir)
    CLIPProcessor(image_processor=tiny_image_processor(p["image_size"]), tokenizer=tokenizer).save_pretrained(output_dir)
    return output_dir


def build_checkpoint(pretrained: CLIPModel, zero_shot_head: torch.Tensor, output_dir: str) -> str:
    """A "fine-tuned" EuroSAT classifier: the pretrained tower moved a little, with a zero-shot head."""
    classifier = CLIPVisionClassifier.from_clip(pretrained, zero_shot_head * 100.0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in classifier.vision_model.parameters():
            p.add_(0.01 * p.abs().mean() * torch.randn(p.shape, generator=generator).to(p))
    classifier.save_pretrained(output_dir)
    return output_dir


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only_throughput(model, device, image_size: int, batch_size: int, batches: int, bf16: bool) -> float:
    """img/s of `encode_images` on preprocessed images already on the device."""
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), autocast:
        encode_images(model, pixel_values)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            encode_images(model, pixel_values)
        synchronize(device)
    return batch_size * batches / (time.perf_counter() - start)


# Where a cached run's time goes: (file, function) pairs whose cumulative time cProfile reports.
PROFILED = (
    ("heads.py", "extract_features"),
    ("transforms.py", "transform"),
    ("modeling.py", "encode_images"),
    ("heads.py", "fit_linear_probe"),
    ("heads.py", "zero_shot_classifier"),
    ("distances.py", "feature_distance"),
    ("distances.py", "parameter_distance"),
    ("cache.py", "model_fingerprint"),
    ("cache.py", "load_features"),
    ("cache.py", "load_accuracies"),
    ("checkpoints.py", "load_checkpoint"),
    ("loading.py", "load_benchmark"),
)


def profile_breakdown(fn) -> tuple[float, dict[str, float]]:
    """Run `fn` under cProfile: its total seconds and the cumulative seconds of each PROFILED function."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(fn)
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats
    breakdown = {}
    for filename, function in PROFILED:
        seconds = [ct for (path, _, name), (_, _, _, ct, _) in stats.items() if name == function and os.path.basename(path) == filename]
        breakdown[f"{filename}:{function}"] = max(seconds, default=0.0)  # the outermost entry (recursion counts once)
    return total, breakdown


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--num_train", type=int, default=64, help="linear-probe training images per benchmark")
    parser.add_argument("--num_test", type=int, default=32, help="test images per benchmark (and per corruption split)")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--lp_iterations", type=int, default=1000)
    parser.add_argument("--model_batches", type=int, default=10, help="batches timed for the model-only throughput")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--workdir", default=None, help="where models, data and the cache go (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=1, help="uncached and cache-reading runs, alternated; medians are reported")
    parser.add_argument("--profile", action="store_true", help="profile one more cached run with cProfile and print where its time goes")
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args()
    for name in ("num_train", "num_test", "batch_size", "lp_iterations", "model_batches", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datasets.disable_progress_bars()
    benchmarks = [spec.name for spec in NINE]

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or tmp
        # 1. The model, a checkpoint and benchmark-shaped data.
        pretrained_dir = build_clip(args.preset, os.path.join(root, "clip"))
        dataset_paths = {
            name: save_benchmark_like_dataset(
                name, os.path.join(root, "data", name), num_train=args.num_train, num_test=args.num_test,
                image_size=NATIVE[name][0], image_mode=NATIVE[name][1],
            )
            for name in benchmarks
        }

        def settings(cache_dir=None):
            return EvaluatorSettings(
                dataset_paths=dataset_paths, batch_size=args.batch_size, num_workers=args.num_workers,
                lp_iterations=args.lp_iterations, device=str(device), feature_cache_dir=cache_dir,
            )

        warm = ConceptForgettingEvaluator.from_pretrained(pretrained_dir, settings())
        for name in benchmarks:  # untimed: loads every benchmark once, so datasets' caches are warm
            warm.benchmark(name)
        checkpoint_dir = build_checkpoint(warm.pretrained, warm.zero_shot_weights("eurosat"), os.path.join(root, "checkpoint"))
        checkpoint = warm.load(checkpoint_dir)

        # 2. Model-only throughput and the pipeline's.
        image_size = PRESETS[args.preset]["image_size"]
        model_only = {
            "float32": model_only_throughput(checkpoint, device, image_size, args.batch_size, args.model_batches, bf16=False),
            "bf16 autocast": model_only_throughput(checkpoint, device, image_size, args.batch_size, args.model_batches, bf16=True),
        }
        pipeline = {}
        for name in benchmarks:
            bench = warm.benchmark(name)
            images = sum(len(bench.splits[split]) for split in ("train", "test"))
            _, seconds = timed(lambda: [extract_features(checkpoint, bench.splits[s], batch_size=args.batch_size, num_workers=args.num_workers) for s in ("train", "test")])
            pipeline[name] = {"images": images, "seconds": seconds, "img_per_s": images / seconds}
        total_images = sum(p["images"] for p in pipeline.values())
        total_seconds = sum(p["seconds"] for p in pipeline.values())

        # 3. One checkpoint on the nine benchmarks: no cache, cache filled, cache read.
        def score(cache_dir):
            evaluator = ConceptForgettingEvaluator.from_pretrained(pretrained_dir, settings(cache_dir))
            model = evaluator.load(checkpoint_dir)
            evaluator.pretrained_accuracies(benchmarks)
            return evaluator.evaluate(model, benchmarks, key=checkpoint_dir, finetune_benchmark="eurosat")

        cache_dir = os.path.join(root, "feature_cache")
        _, t_fill = timed(lambda: score(cache_dir))
        t_uncached, t_cached = [], []
        for _ in range(args.repeats):  # alternated, so a change of the machine's load hits both alike
            uncached, seconds = timed(lambda: score(None))
            t_uncached.append(seconds)
            cached, seconds = timed(lambda: score(cache_dir))
            t_cached.append(seconds)
        same = uncached == cached
        profiled = profile_breakdown(lambda: score(cache_dir)) if args.profile else None

    meta = {
        **machine_metadata(device),
        "load_average": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "preset": args.preset,
        "num_train": args.num_train,
        "num_test": args.num_test,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "lp_iterations": args.lp_iterations,
        "repeats": args.repeats,
    }
    results = {
        "model_only_img_per_s": model_only,
        "pipeline_img_per_s": total_images / total_seconds,
        "pipeline_per_benchmark": pipeline,
        "one_checkpoint_nine_benchmarks_seconds": {
            "cache filled (first run)": t_fill,
            "uncached (median)": statistics.median(t_uncached),
            "cache read (later runs, median)": statistics.median(t_cached),
        },
        "one_checkpoint_nine_benchmarks_all_seconds": {"uncached": t_uncached, "cache read": t_cached},
        "cached_record_equals_uncached": same,
    }
    print(" ".join(f"{k}={v}" for k, v in meta.items()))
    print("| feature extraction | img/s |\n|---|---|")
    for precision, value in model_only.items():
        print(f"| model only, preprocessed images on the device, {precision}, batch {args.batch_size} | {value:,.0f} |")
    print(f"| evaluator pipeline (decode + resize on CPU, {args.num_workers} workers), nine benchmarks, float32 | {results['pipeline_img_per_s']:,.0f} |")
    print("\n| one checkpoint on the nine benchmarks (with the pretrained reference) | seconds |\n|---|---|")
    for name, value in results["one_checkpoint_nine_benchmarks_seconds"].items():
        print(f"| {name} | {value:.1f} |")
    print(f"\ncached record equals uncached: {same}")
    print("\n| benchmark | native px | images | img/s through the pipeline |\n|---|---|---|---|")
    for name, p in pipeline.items():
        print(f"| {name} | {NATIVE[name][0]} | {p['images']} | {p['img_per_s']:,.0f} |")
    if profiled is not None:
        total, breakdown = profiled
        results["profile_cached_run"] = {"total_seconds": total, "cumulative_seconds": breakdown}
        print(f"\n| where a cached run's {total:.1f} s go (cProfile, cumulative; nested calls overlap) | seconds | share |\n|---|---|---|")
        for name, seconds in breakdown.items():
            print(f"| {name} | {seconds:.2f} | {seconds / total:.0%} |")
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    if not same:
        sys.exit("the cached evaluation's record differs from the uncached one")


if __name__ == "__main__":
    main()
