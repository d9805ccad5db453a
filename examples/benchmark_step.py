#!/usr/bin/env python
"""Time one training step of CE, L2SP and LDIFS on a CLIP vision classifier (CPU or GPU).

    python examples/benchmark_step.py --preset vit-b-32 --batch_size 128 --steps 20     # a GPU
    python examples/benchmark_step.py --preset small --batch_size 32 --steps 10         # a laptop

Reports ms/step, images/s and the ratio to CE for: CE; L2SP as this toolkit computes it (one foreach
autograd node) and as a per-parameter autograd penalty; LDIFS with one student forward (this toolkit)
and official-code style (the student run twice). Random weights: timing does not depend on them.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig

from ldifs_hf.modeling import CLIPClassifierConfig, CLIPVisionClassifier
from ldifs_hf.regularizers import default_ldifs_layers, l2sp_penalty, ldifs_distance
from ldifs_hf.modeling import encoder_parameters

PRESETS = {
    "vit-b-32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=4, image_size=96, patch_size=16),
}


def build(preset: str, device, num_labels=10):
    vision = CLIPVisionConfig(**PRESETS[preset])
    model = CLIPVisionClassifier(CLIPClassifierConfig(vision_config=vision.to_dict(), projection_dim=512, num_labels=num_labels))
    return model.to(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build(args.preset, device)
    teacher = copy.deepcopy(model.vision_model).requires_grad_(False).eval()
    reference = [p.detach().clone() for p in encoder_parameters(model)]
    layers = default_ldifs_layers(model.config.vision_config.num_hidden_layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    size = model.config.vision_config.image_size
    x = torch.randn(args.batch_size, 3, size, size, device=device)
    y = torch.randint(0, model.config.num_labels, (args.batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def ce(hidden=False):
        out = model(pixel_values=x, output_hidden_states=hidden)
        return F.cross_entropy(out.logits.float(), y), out

    def step_ce():
        return ce()[0]

    def step_l2sp_foreach():
        return ce()[0] + 0.5 * l2sp_penalty(encoder_parameters(model), reference)

    def step_l2sp_autograd():
        penalty = sum(((p - r) ** 2).sum() for p, r in zip(encoder_parameters(model), reference))
        return ce()[0] + 0.5 * penalty

    def step_ldifs():
        loss, out = ce(hidden=True)
        with torch.no_grad():
            t = teacher(pixel_values=x, output_hidden_states=True).hidden_states
        return loss + 10 * ldifs_distance(out.hidden_states, t, layers)

    def step_ldifs_twice():
        loss, _ = ce()
        s = model.vision_model(pixel_values=x, output_hidden_states=True).hidden_states
        with torch.no_grad():
            t = teacher(pixel_values=x, output_hidden_states=True).hidden_states
        return loss + 10 * ldifs_distance(s, t, layers)

    variants = {
        "CE": step_ce,
        "L2SP (foreach node, ours)": step_l2sp_foreach,
        "L2SP (per-parameter autograd)": step_l2sp_autograd,
        "LDIFS (one student forward, ours)": step_ldifs,
        "LDIFS (student twice, official style)": step_ldifs_twice,
    }
    results = {}
    for name, fn in variants.items():
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
            with autocast:
                loss = fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / args.steps * 1000
        results[name] = {"ms": ms, "img_per_s": args.batch_size / ms * 1000}
        if device.type == "cuda":
            results[name]["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    base = results["CE"]["ms"]
    print(f"device={device} preset={args.preset} batch={args.batch_size} steps={args.steps} threads={torch.get_num_threads()}")
    print("| step | ms | img/s | vs CE |\n|---|---|---|---|")
    for name, r in results.items():
        r["vs_ce"] = r["ms"] / base
        print(f"| {name} | {r['ms']:.1f} | {r['img_per_s']:.0f} | {r['vs_ce']:.2f} |")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"device": str(device), "preset": args.preset, "batch_size": args.batch_size, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
