"""FSDP2 on CPU, as far as torch allows: accelerate runs FSDP only on GPUs (with --use_cpu it trains plain
DDP, which the run refuses), but torch's `fully_shard` shards over gloo on CPU. Two processes shard the
classifier exactly as accelerate's FSDP2 does (in place, one unit per encoder layer, then the whole
model), and `LDIFSTrainer.compute_loss` must give the same loss, regularizer value and gradients as one
process on the whole batch: L2SP on sharded weights (each process its shards, the value all-reduced), and
LDIFS with its whole-copy teacher."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import copy, json, os, sys
    import torch
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import CLIPModel, CLIPProcessor
    from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments, get_method
    from ldifs_hf.modeling import image_encoder
    from ldifs_hf.training.build import build_model

    torch.set_num_threads(1)
    method, clip_dir, out, layout = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    args = LDIFSTrainingArguments(output_dir=out, method=method, use_cpu=True, report_to=[], per_device_train_batch_size=4,
                                  ldifs_lambda=10.0, l2sp_lambda=3.0, seed=0)
    rank, world = args.process_index, args.world_size
    assert world == 2 and torch.distributed.is_initialized()

    clip = CLIPModel.from_pretrained(clip_dir)
    tokenizer = CLIPProcessor.from_pretrained(clip_dir).tokenizer
    model = build_model(get_method(method), clip, tokenizer, ["cat", "dog", "bird"], ["a photo of a {}."])
    trainer = LDIFSTrainer(model=model, args=args)  # teacher and L2SP anchor: the model as given
    with torch.no_grad():  # the student moves away from its anchor, so both terms are non-zero
        g = torch.Generator().manual_seed(1)
        for p in image_encoder(model).parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))

    g = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.randn(8, 3, 32, 32, generator=g), "labels": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])}
    term = "loss_" + trainer.regularizer

    # One process, whole batch, unsharded: the reference.
    plain = copy.deepcopy(model)
    trainer.model = plain  # the trainer captures hidden states from its current model
    loss = trainer.compute_loss(plain, batch)
    loss.backward()
    expected = {"loss": loss.item(), term: trainer._metrics["train"][term][-1].item()}
    expected_grads = {n: p.grad.clone() for n, p in plain.named_parameters() if p.grad is not None}
    trainer._metrics["train"].clear()
    trainer.model = model

    # Two processes, half the batch each, the model sharded in place as accelerate's FSDP2 shards it.
    # FSDP: one dimension of 2 shards; HSDP: 2 replicas of 1 shard each (the value must not count replicas).
    mesh = init_device_mesh("cpu", (world,)) if layout == "fsdp" else init_device_mesh("cpu", (world, 1), mesh_dim_names=("replicate", "shard"))
    for layer in image_encoder(model).encoder.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    half = {k: v[rank * 4:(rank + 1) * 4] for k, v in batch.items()}
    loss = trainer.compute_loss(model, half)
    loss.backward()
    losses = [None] * world
    torch.distributed.all_gather_object(losses, loss.item())
    values = [None] * world
    torch.distributed.all_gather_object(values, trainer._metrics["train"][term][-1].item())
    local = lambda t: t.full_tensor() if hasattr(t, "full_tensor") else t
    grads = {n: local(p.grad) for n, p in model.named_parameters() if p.grad is not None}
    sharded = sorted({type(p).__name__ for p in model.parameters()})
    if rank == 0:
        diff = {n: (grads[n] - expected_grads[n]).abs().max().item() for n in expected_grads}
        scale = max(g.abs().max().item() for g in expected_grads.values())
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"expected": expected, "mean_loss": sum(losses) / world, "values": values, "grad_diff": max(diff.values()),
                       "grad_scale": scale, "same_names": sorted(grads) == sorted(expected_grads), "param_types": sharded,
                       "teacher": type(trainer.teacher).__name__ if trainer.teacher is not None else None}, f)
    # Leave without tearing gloo down: destroying its process groups, or the interpreter's exit doing it,
    # while the other process may already have closed its sockets aborted a process now and then (SIGABRT,
    # even after a barrier and destroy_process_group). So every process finishes its collectives (the
    # barrier), waits on the launcher's store, not on gloo, until every process has, and then ends at once.
    torch.distributed.barrier()
    store = torch.distributed.distributed_c10d._get_default_store()
    store.set(f"finished/{rank}", "1")
    store.wait([f"finished/{r}" for r in range(world)])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("method,layout", [("zs-init-l2sp", "fsdp"), ("zs-init-ldifs", "fsdp"), ("zs-init-l2sp", "hsdp")])
def test_fsdp2_sharded_loss_and_gradients_equal_one_process(method, layout, tiny_clip_dir, tmp_path):
    script = tmp_path / "fsdp_step.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    # --standalone: a free port, not 29500, which another run on the machine may hold.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), method, str(tiny_clip_dir),
           str(out), layout]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["param_types"] == ["DTensor"]  # every weight really is sharded
    term = "loss_" + method.split("-")[-1]
    assert result["expected"][term] > 0
    if term == "loss_l2sp":  # the value on each process is the whole model's, all-reduced over the shards ...
        assert result["values"] == pytest.approx([result["expected"][term]] * 2, rel=1e-5)
    else:  # ... LDIFS is a mean over the batch: the two halves average to the whole batch's value ...
        assert sum(result["values"]) / 2 == pytest.approx(result["expected"][term], rel=1e-5)
    # ... the loss averaged over the two processes is the one-process loss on the whole batch ...
    assert result["mean_loss"] == pytest.approx(result["expected"]["loss"], rel=1e-5)
    # ... and so are the gradients, shard by shard (FSDP averages the task part, L2SP's stays local).
    assert result["same_names"] and result["grad_diff"] <= 1e-5 * max(1.0, result["grad_scale"])


def test_under_fsdp_the_teacher_is_still_moved_to_the_device(monkeypatch):
    """accelerate skips device placement under FSDP (the sharding places the student); the teacher is not
    sharded, so it must be moved explicitly, or it would stay on the CPU beside a GPU student."""
    from types import SimpleNamespace

    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from torch import nn

    from ldifs_hf.training.distributed import prepare_frozen_model

    accelerator = Accelerator(cpu=True)
    monkeypatch.setattr(type(accelerator), "distributed_type", property(lambda self: DistributedType.FSDP))
    moved = []

    class Spy(nn.Linear):
        def to(self, *args, **kwargs):
            moved.append(args[0] if args else kwargs.get("device"))
            return super().to(*args, **kwargs)

    teacher = prepare_frozen_model(SimpleNamespace(accelerator=accelerator), Spy(2, 2).eval())
    assert moved == [accelerator.device] and isinstance(teacher, nn.Linear)
