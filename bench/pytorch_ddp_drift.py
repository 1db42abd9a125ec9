#!/usr/bin/env python3
"""How far PyTorch's own data-parallel training drifts from one process: the yardstick
for what "two ranks equal one process" can mean on a BatchNorm network.

`train` runs a few AdamW steps of a vit-train run's network (bench/pytorch_reference.py
builds it with vit-train's names and loads the run's last.safetensors) on COCO-5 images,
with the run's label smoothing and gradient clipping, and records the first step's
gradients, the BatchNorm statistics after it, the weights after steps 1, 5 and 10 and
the loss of every step. Alone it trains on whole batches; under torchrun each rank takes
its half of every batch, gradients are averaged by DistributedDataParallel (Gloo) and
BatchNorm uses the statistics of the whole batch. `torch.nn.SyncBatchNorm` refuses the
CPU ("SyncBatchNorm layers only work with GPU modules"), so `--bn formulas` writes the
same computation out (batch mean and biased variance over all ranks through an autograd
all-reduce, unbiased variance into the running estimate); `--bn native` keeps
`nn.BatchNorm2d` (under torchrun: each rank's own statistics, the fault to detect).

    python bench/pytorch_ddp_drift.py train RUN DATA OUT.pt [--steps 10] [--batch 80] [--threads 1]
    torchrun --standalone --nproc-per-node 2 bench/pytorch_ddp_drift.py train RUN DATA OUT2.pt --bn formulas
    python bench/pytorch_ddp_drift.py compare A.pt B.pt      # one JSON line

Uses torch, numpy and PIL (the toolchain venv's).
"""

import argparse
import json
import os
import sys
import tomllib

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import ViT, load_weights, make_optimizer  # noqa: E402

RECORDED_STEPS = (1, 5, 10)


class FormulaBatchNorm(nn.Module):
    """BatchNorm2d in training mode written out; with a process group, the
    statistics are those of the batch over all ranks (what SyncBatchNorm computes)."""

    def __init__(self, bn, group):
        super().__init__()
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.eps, self.momentum, self.group = bn.eps, bn.momentum, group

    def _sum(self, t):
        if self.group is None:
            return t
        from torch.distributed.nn.functional import all_reduce  # differentiable: its backward all-reduces too
        return all_reduce(t, group=self.group)

    def forward(self, x):
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        c = x.shape[1]
        local = torch.tensor([x.numel() / c], dtype=x.dtype)
        sums = self._sum(torch.cat([x.sum((0, 2, 3)), local]))
        n = sums[c]
        mean = sums[:c] / n
        centred = x - mean.view(1, c, 1, 1)
        var = self._sum(centred.pow(2).sum((0, 2, 3))) / n  # two passes, as Welford's accuracy
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(mean, alpha=self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(var * (n / (n - 1)), alpha=self.momentum)
        scale = (self.weight / torch.sqrt(var + self.eps)).view(1, c, 1, 1)
        return centred * scale + self.bias.view(1, c, 1, 1)


def load_images(data, cfg, per_class):
    """The first `per_class` images of each class of DATA/train, resized and normalised as the preset says."""
    root = os.path.join(data, "train") if os.path.isdir(os.path.join(data, "train")) else data
    side, pre = cfg["image_size"], cfg.get("preprocess", {})
    mean = np.array(pre.get("mean", [0.5] * 3), np.float32).reshape(3, 1, 1)
    std = np.array(pre.get("std", [0.5] * 3), np.float32).reshape(3, 1, 1)
    xs, ys = [], []
    for label, cls in enumerate(sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))):
        for name in sorted(os.listdir(os.path.join(root, cls)))[:per_class]:
            img = Image.open(os.path.join(root, cls, name)).convert("RGB").resize((side, side), Image.BILINEAR)
            xs.append((np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0 - mean) / std)
            ys.append(label)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys)


def train(a):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    bn_group = None
    if world > 1:
        dist.init_process_group("gloo")
        # Its own group: BatchNorm's collectives inside the forward must not interleave with DDP's buckets.
        bn_group = dist.new_group(backend="gloo") if a.bn == "formulas" else None
    torch.set_num_threads(a.threads)
    with open(os.path.join(a.run, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    tr = cfg["train"]
    model = ViT(cfg)
    load_weights(model, os.path.join(a.run, "last.safetensors"))
    if a.bn == "formulas":
        for stage in model.net.modules():
            if hasattr(stage, "bn") and isinstance(stage.bn, nn.BatchNorm2d):
                stage.bn = FormulaBatchNorm(stage.bn, bn_group)
    model.train()
    opt = make_optimizer(model, tr, "single")
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    x, y = load_images(a.data, cfg, a.per_class)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(a.seed))
    record = {"grads": {}, "bn": {}, "weights": {}, "losses": [], "world": world, "threads": a.threads, "bn_kind": a.bn}
    for step in range(1, a.steps + 1):
        start = ((step - 1) * a.batch) % (len(y) - a.batch + 1)
        idx = order[start:start + a.batch]
        share = a.batch // world
        idx = idx[rank * share:(rank + 1) * share]
        logits = net(x[idx])
        loss = F.cross_entropy(logits, y[idx], label_smoothing=tr.get("label_smoothing", 0.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        global_loss = loss.detach().clone()
        if world > 1:
            dist.all_reduce(global_loss)
            global_loss /= world
        record["losses"].append(float(global_loss))
        if step == 1:
            record["grads"] = {n: p.grad.detach().clone() for n, p in model.net.named_parameters()}
        if tr.get("grad_clip", 0.0) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
        opt.step()
        state = {n: t.detach().clone() for n, t in model.net.state_dict().items() if t.is_floating_point()}
        if step == 1:
            record["bn"] = {n: t for n, t in state.items() if "running_" in n}
        if step in RECORDED_STEPS:
            record["weights"][step] = state
    if rank == 0:
        torch.save(record, a.out)
    if world > 1:
        dist.destroy_process_group()


def rel(a, b):
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


def compare(a):
    p, q = torch.load(a.a), torch.load(a.b)
    names = sorted(p["grads"])
    ga = torch.cat([p["grads"][n].flatten() for n in names])
    gb = torch.cat([q["grads"][n].flatten() for n in names])
    out = {
        "a": a.a, "b": a.b,
        "first_step_grad_max_rel": max(rel(p["grads"][n], q["grads"][n]) for n in names),
        "first_step_grad_global_rel": float((ga - gb).norm() / ga.norm()),
        "bn_stats_max_rel": max((rel(p["bn"][n], q["bn"][n]) for n in p["bn"]), default=0.0),
        "loss_max_rel_diff": max(abs(x - y) / abs(x) for x, y in zip(p["losses"], q["losses"])),
    }
    for step in sorted(set(p["weights"]) & set(q["weights"])):
        out[f"weights_max_abs_diff_step{step}"] = max(
            float((p["weights"][step][n] - q["weights"][step][n]).abs().max()) for n in p["weights"][step])
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a few steps and record them")
    t.add_argument("run", help="a vit-train run folder (config.toml, last.safetensors): the network and start weights")
    t.add_argument("data", help="COCO-5 (or any image folder with train/<class>/)")
    t.add_argument("out", help="where rank 0 saves the record (.pt)")
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--batch", type=int, default=80, help="the global batch (split evenly over ranks)")
    t.add_argument("--per-class", type=int, default=16)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--bn", choices=["native", "formulas"], default="formulas")
    c = sub.add_parser("compare", help="compare two records (JSON line)")
    c.add_argument("a")
    c.add_argument("b")
    a = ap.parse_args()
    train(a) if a.cmd == "train" else compare(a)


if __name__ == "__main__":
    main()
