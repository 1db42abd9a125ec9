#!/usr/bin/env python3
"""PyTorch eager reference of a vit-train run, the yardstick for training speed.

Builds the run's network (config.toml, both variants) in plain PyTorch with the
same state-dict names as vit-train's VarStore, loads the run's last.safetensors,
and checks its logits against the run's model.onnx with ONNX Runtime, so the
timed network is provably the one vit-train trains (exit 1 above --tolerance).
Then it times training steps as vit-train's Trainer does them: forward, cross
entropy with label smoothing, backward, global-norm clipping, Adam/AdamW with
no decay on norms, biases and tokens, and the weight average when the recipe has
one; at the preset's batch size on a fixed synthetic batch, with `--threads`
intra-op threads. Prints one JSON line.

    python bench/pytorch_reference.py RUN_DIR [--steps 20] [--threads 2] [--check-only]

Uses only torch, onnxruntime and numpy (the toolchain venv's).
"""

import argparse
import json
import math
import os
import struct
import sys
import time
import tomllib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

SELF_ATTENTION_MASK = -1e9  # vit::config::SELF_ATTENTION_MASK


def fail(message):
    print(f"pytorch_reference: {message}", file=sys.stderr)
    sys.exit(1)


def read_safetensors(path):
    """The tensors of a safetensors file (F32/F64/I64), without the safetensors package."""
    dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "F16": torch.float16,
              "BF16": torch.bfloat16}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        lo, hi = meta["data_offsets"]
        if meta["dtype"] not in dtypes:
            fail(f"{path}: tensor `{name}` has unsupported dtype {meta['dtype']}")
        t = torch.frombuffer(bytearray(body[lo:hi]), dtype=dtypes[meta["dtype"]]) if hi > lo else \
            torch.empty(0, dtype=dtypes[meta["dtype"]])
        out[name] = t.reshape(meta["shape"]).clone()
    return out


def num_tokens(cfg):
    return (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1


class StemStage(nn.Module):
    def __init__(self, inp, out, stride):
        super().__init__()
        self.conv = nn.Conv2d(inp, out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out, eps=1e-5, momentum=0.1)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class PatchEmbed(nn.Module):
    """Conv patchify (or conv stem + 1x1 projection), class token, position embedding.

    Its parameters live on the parent (`cls_token`, `pos_embed`) as vit-train names them."""

    def __init__(self, cfg):
        super().__init__()
        e, channels = cfg["embed_dim"], cfg["in_channels"]
        stem = []
        if cfg.get("stem", "patch") == "conv":
            strides = cfg.get("stem_strides", [])
            for i, c in enumerate(cfg["stem_channels"]):
                stem.append(StemStage(channels, c, strides[i] if i < len(strides) else 2))
                channels = c
        self.stem = nn.ModuleList(stem)
        k = 1 if stem else cfg["patch_size"]
        self.proj = nn.Conv2d(channels, e, k, stride=k)

    def forward(self, x, cls_token, pos_embed):
        for stage in self.stem:
            x = stage(x)
        patches = self.proj(x).flatten(2).transpose(1, 2)
        cls = cls_token.expand(x.shape[0], 1, -1)
        return torch.cat([cls, patches], 1) + pos_embed


def drop_path(x, rate, training):
    if not training or rate <= 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e, h = cfg["embed_dim"], cfg["num_heads"]
        self.heads, self.head_dim, self.tokens = h, e // h, num_tokens(cfg)
        self.qkv = nn.Linear(e, 3 * e, bias=cfg["qkv_bias"])
        self.proj = nn.Linear(e, e)
        self.dropout = cfg["dropout"]
        if cfg.get("locality_attention", False):
            self.scale = nn.Parameter(torch.full((h,), self.head_dim ** -0.5))
        else:
            self.scale = None

    def forward(self, x):
        l, h, d = self.tokens, self.heads, self.head_dim
        q, k, v = self.qkv(x).reshape(-1, l, 3, h, d).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1)
        if self.scale is not None:
            scores = scores * self.scale.reshape(h, 1, 1) + torch.eye(l, dtype=scores.dtype, device=scores.device) * SELF_ATTENTION_MASK
        else:
            scores = scores * d ** -0.5
        attn = F.dropout(scores.softmax(-1), self.dropout, self.training)
        out = (attn @ v).transpose(1, 2).reshape(-1, l, h * d)
        return F.dropout(self.proj(out), self.dropout, self.training)


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e = cfg["embed_dim"]
        hidden = int(round(e * cfg["mlp_ratio"]))
        self.fc1, self.fc2, self.dropout = nn.Linear(e, hidden), nn.Linear(hidden, e), cfg["dropout"]

    def forward(self, x):
        x = F.dropout(F.gelu(self.fc1(x)), self.dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, cfg, rate):
        super().__init__()
        e, eps = cfg["embed_dim"], cfg["layer_norm_eps"]
        self.norm1, self.attn = nn.LayerNorm(e, eps=eps), Attention(cfg)
        self.norm2, self.mlp = nn.LayerNorm(e, eps=eps), Mlp(cfg)
        self.rate = rate

    def forward(self, x):
        x = x + drop_path(self.attn(self.norm1(x)), self.rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.rate, self.training)


class StandardViT(nn.Module):
    """crates/vit-train/src/model/standard.rs: timm-style pre-LN ViT."""

    def __init__(self, cfg):
        super().__init__()
        e, depth = cfg["embed_dim"], cfg["depth"]
        if cfg["pooling"] not in ("cls", "mean"):
            fail(f"pooling `{cfg['pooling']}` is not reproduced by this reference")
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens(cfg), e))
        rate = lambda i: cfg["drop_path"] * i / (depth - 1) if depth > 1 else cfg["drop_path"]  # noqa: E731
        self.blocks = nn.ModuleList(Block(cfg, rate(i)) for i in range(depth))
        self.norm = nn.LayerNorm(e, eps=cfg["layer_norm_eps"])
        self.head = nn.Linear(e, cfg["num_classes"])
        self.pooling, self.dropout = cfg["pooling"], cfg["dropout"]

    def forward(self, x):
        x = F.dropout(self.patch_embed(x, self.cls_token, self.pos_embed), self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.pooling == "cls" else x.mean(1))


class DlstudioHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tokens, self.head_dim = num_tokens(cfg), cfg["embed_dim"] // cfg["num_heads"]
        n = self.tokens * self.head_dim
        self.WQ, self.WK, self.WV = nn.Linear(n, n), nn.Linear(n, n), nn.Linear(n, n)

    def forward(self, x):
        l, d = self.tokens, self.head_dim
        flat = x.reshape(-1, l * d)
        q, k, v = (w(flat).reshape(-1, l, d) for w in (self.WQ, self.WK, self.WV))
        a = (q @ k.transpose(1, 2)).softmax(1)  # over the query axis, as ViTHelper
        return (a @ v) / math.sqrt(d)


class DlstudioSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.head_dim = cfg["embed_dim"] // cfg["num_heads"]
        self.attention_heads_arr = nn.ModuleList(DlstudioHead(cfg) for _ in range(cfg["num_heads"]))

    def forward(self, x):
        d = self.head_dim
        return torch.cat([head(x[:, :, i * d:(i + 1) * d]) for i, head in enumerate(self.attention_heads_arr)], 2)


class DlstudioEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        l, e, eps = num_tokens(cfg), cfg["embed_dim"], cfg["layer_norm_eps"]
        self.tokens, self.embed_dim = l, e
        self.norm1, self.self_attention_layer = nn.LayerNorm(e, eps=eps), DlstudioSelfAttention(cfg)
        self.norm2 = nn.LayerNorm(e, eps=eps)
        self.W1, self.W2 = nn.Linear(l * e, 2 * l * e), nn.Linear(2 * l * e, l * e)

    def forward(self, x):
        y = x + self.self_attention_layer(self.norm1(x))
        flat = self.norm2(y).reshape(-1, self.tokens * self.embed_dim)
        return y + self.W2(F.relu(self.W1(flat))).reshape(-1, self.tokens, self.embed_dim)


class DlstudioEncoders(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.basic_encoder_arr = nn.ModuleList(DlstudioEncoder(cfg) for _ in range(cfg["depth"]))


class DlstudioViT(nn.Module):
    """crates/vit-train/src/model/dlstudio.rs: DLStudio's ViTHelper network."""

    def __init__(self, cfg):
        super().__init__()
        e = cfg["embed_dim"]
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens(cfg), e))
        self.encoder = DlstudioEncoders(cfg)
        self.head = nn.Linear(e, cfg["num_classes"])

    def forward(self, x):
        x = self.patch_embed(x, self.cls_token, self.pos_embed)
        for enc in self.encoder.basic_encoder_arr:
            x = enc(x)
        return self.head(x.mean(1))


class ViT(nn.Module):
    """The network plus evaluation-time flip averaging (as the exported graph)."""

    def __init__(self, cfg):
        super().__init__()
        self.net = {"standard": StandardViT, "dlstudio": DlstudioViT}[cfg["variant"]](cfg)
        self.test_time_flip = cfg.get("test_time_flip", False)

    def forward(self, x):
        if self.training or not self.test_time_flip:
            return self.net(x)
        b = x.shape[0]
        logits = self.net(torch.cat([x, x.flip(3)], 0))
        return logits.view(2, b, -1).mean(0)


def load_weights(model, path):
    tensors = read_safetensors(path)
    state = model.net.state_dict()
    missing = [k for k in state if k not in tensors and not k.endswith("num_batches_tracked")]
    unused = [k for k in tensors if k not in state]
    if missing or unused:
        fail(f"{path}: names differ from the reference network: missing {missing[:5]}, unused {unused[:5]}")
    with torch.no_grad():
        for k, v in state.items():
            if k in tensors:
                if tuple(tensors[k].shape) != tuple(v.shape):
                    fail(f"{path}: `{k}` has shape {tuple(tensors[k].shape)}, the reference {tuple(v.shape)}")
                v.copy_(tensors[k].to(v.dtype))


def check_against_onnx(model, run, cfg, tolerance, batch=4):
    import onnxruntime as ort

    model.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg["in_channels"], cfg["image_size"], cfg["image_size"], generator=g)
    with torch.no_grad():
        ours = model(x).numpy()
    sess = ort.InferenceSession(os.path.join(run, "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    theirs = sess.run(None, {name: x.numpy()})[0]
    diff = float(np.abs(ours - theirs).max())
    if not diff <= tolerance:
        fail(f"{run}: logits differ from model.onnx by {diff:.3g} (> {tolerance:g}): not the same network")
    return diff


def is_no_decay(name, shape):
    """optim.rs is_no_decay: 1-D tensors and the tokens."""
    return len(shape) <= 1 or name.endswith("cls_token") or name.endswith("pos_embed")


def make_optimizer(model, train, impl):
    decay, no_decay = [], []
    for name, p in model.net.named_parameters():
        (no_decay if is_no_decay(name, p.shape) else decay).append(p)
    wd = train.get("weight_decay", 0.0)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    cls = torch.optim.AdamW if train.get("optimizer", "adam") == "adamw" else torch.optim.Adam
    kwargs = {"fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False}}.get(impl, {})
    return cls(groups, lr=train["lr"], betas=tuple(train.get("betas", (0.9, 0.999))), eps=train.get("eps", 1e-8),
               **kwargs)


def time_training(model, cfg, steps, warmup, impl, device="cpu", precision="fp32", compile_mode=None):
    train = cfg["train"]
    b, c, s = train["batch_size"], cfg["in_channels"], cfg["image_size"]
    g = torch.Generator().manual_seed(0)
    host_x = torch.randn(b, c, s, s, generator=g)
    host_y = torch.randint(0, cfg["num_classes"], (b,), generator=g)
    model.to(device).train()
    opt = make_optimizer(model, train, impl)
    # torch.compile of the forward (backward through AOTAutograd); "reduce-overhead" replays
    # CUDA graphs: PyTorch's best for a launch-bound step. The optimiser stays eager.
    forward = torch.compile(model, mode=None if compile_mode == "default" else compile_mode) if compile_mode else model
    # Autocast over the forward pass only, the loss in float32: as vit-train's Trainer::step.
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device) if precision == "fp16" else None
    ema_decay = train.get("ema_decay", 0.0)
    ema = [v.detach().clone() for v in model.net.state_dict().values()] if ema_decay > 0 else None
    live = list(model.net.state_dict().values())
    clip, smoothing = train.get("grad_clip", 0.0), train.get("label_smoothing", 0.0)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        # vit-train copies each host batch into a tensor on the device
        x, y = host_x.clone().to(device), host_y.clone().to(device)
        if compile_mode == "reduce-overhead":
            # a new step: the graphs' outputs of the last one may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        opt.zero_grad(set_to_none=False)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        if clip > 0:
            with record_function("gradient clipping"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        with record_function("optimiser step"):
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        if ema is not None:
            with torch.no_grad(), record_function("weight average"):
                floats = [(a, v) for a, v in zip(ema, live) if a.is_floating_point()]
                if device == "cuda":  # timm's ModelEmaV3 way on a GPU: one foreach kernel
                    torch._foreach_lerp_([a for a, _ in floats], [v for _, v in floats], 1.0 - ema_decay)
                else:
                    for avg, v in floats:
                        avg.lerp_(v, 1.0 - ema_decay)
        loss.item()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


# ATen ops -> the part of a training step they belong to (first match wins). The
# optimiser and weight average are timed as phases instead: their elementwise ops
# look like any other.
PROFILE_GROUPS = [
    ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
    ("convolution, batch norm, ReLU (stem, patchify)", ("conv", "batch_norm", "relu", "threshold_backward")),
    ("attention (scores, softmax, weighted sum)", ("bmm", "softmax", "eye")),
    ("matrix products (qkv, proj, MLP, head)", ("addmm", "mm")),
    ("layer norm, GELU", ("layer_norm", "gelu")),
]
PHASES = ("optimiser step", "weight average", "gradient clipping")


def profile_training(model, cfg, steps, device, precision):
    """Where a step's time goes: phases and ATen op groups, ms per step and share of the step."""
    from torch.profiler import ProfilerActivity, profile

    time_training(model, cfg, 3, 2, "default", device, precision)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = sum(time_training(model, cfg, steps, 0, "default", device, precision))
    ops = {name: 0.0 for name, _ in PROFILE_GROUPS}
    phases = {name: 0.0 for name in PHASES}
    for ev in prof.key_averages():
        if ev.key in phases:
            phases[ev.key] += ev.cpu_time_total / 1e6
        elif ev.key.startswith("aten::"):
            op = ev.key[len("aten::"):]
            name = next((n for n, keys in PROFILE_GROUPS if any(k in op for k in keys)), None)
            if name:
                ops[name] += ev.self_cpu_time_total / 1e6
    parts = {**ops, **phases}
    parts["everything else (copies, reshapes, elementwise, autograd, framework)"] = wall - sum(parts.values())
    return {name: {"ms_per_step": 1e3 * sec / steps, "share": sec / wall} for name, sec in parts.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a vit-train run folder (config.toml, last.safetensors, model.onnx)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads (default: all cores)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |logit| difference to the ONNX")
    ap.add_argument("--optimizer-impl", choices=["default", "single", "foreach", "fused"], default="default",
                    help="torch.optim implementation (default: PyTorch's choice: single-tensor on the CPU, foreach on CUDA)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the timed steps run")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                    help="autocast of the forward pass, as vit-train's train.precision (fp16 with GradScaler)")
    ap.add_argument("--compile", choices=["default", "reduce-overhead", "max-autotune"], default=None,
                    help="torch.compile the network in this mode (PyTorch's best; compilation happens in --warmup)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile --steps steps and print where the step time goes (self CPU time per op group)")
    ap.add_argument("--check-only", action="store_true", help="only check the network against model.onnx")
    ap.add_argument("--skip-check", action="store_true", help="time without the ONNX check")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    with open(os.path.join(a.run, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    torch.manual_seed(cfg["train"].get("seed", 0))
    model = ViT(cfg)
    load_weights(model, os.path.join(a.run, "last.safetensors"))
    result = {"run": a.run, "variant": cfg["variant"], "threads": a.threads, "batch_size": cfg["train"]["batch_size"]}
    if not a.skip_check:
        result["onnx_max_abs_diff"] = check_against_onnx(model, a.run, cfg, a.tolerance)
    if not a.check_only:
        if a.device == "cuda" and not torch.cuda.is_available():
            fail("--device cuda: torch sees no CUDA device")
        started = time.perf_counter()
        times = sorted(time_training(model, cfg, a.steps, a.warmup, a.optimizer_impl, a.device, a.precision,
                                     a.compile))
        median = times[len(times) // 2]
        result.update(steps=a.steps, device=a.device, precision=a.precision, optimizer_impl=a.optimizer_impl,
                      compile=a.compile, step_ms_median=median * 1e3,
                      images_per_sec=a.steps * cfg["train"]["batch_size"] / sum(times),
                      wall_seconds=time.perf_counter() - started)
        if a.device == "cuda":
            result["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            result["cuda_max_memory_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    if a.profile:
        result["profile"] = profile_training(model, cfg, a.steps, a.device, a.precision)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
