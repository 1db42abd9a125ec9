#!/usr/bin/env python3
"""Tables from the results folder of scripts/gpu-proof.sh (unpacked results.tar.gz).

    python3 scripts/gpu-report.py RESULTS_DIR [--json OUT.json]

Prints markdown: training steps ours vs PyTorch (median images/s over rounds,
ratio, nvidia-smi memory and utilisation while each side ran), the real fits,
torchrun vs plain, and the provider check. Standard library only.
"""
import argparse
import csv
import datetime as dt
import json
import os
import statistics
import sys


def lines(path):
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []


def steps(results):
    """name -> (rc, start, end) from steps.tsv."""
    out = {}
    for row in csv.reader(open(os.path.join(results, "steps.tsv")), delimiter="\t"):
        if len(row) == 4:
            out[row[0]] = (int(row[1]), float(row[2]), float(row[3]))
    return out


def smi_samples(results):
    """(unix time, util %, memory MiB) from smi.csv (nvidia-smi timestamps are local time)."""
    path = os.path.join(results, "smi.csv")
    out = []
    if not os.path.exists(path):
        return out
    for row in csv.reader(open(path)):
        try:
            t = dt.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            out.append((t, float(row[1]), float(row[2])))
        except (ValueError, IndexError):
            continue
    return out


def during(samples, span, skip=0.0):
    """Mean utilisation and peak memory of the samples inside a step's span (first `skip` s left out)."""
    if not span:
        return None
    inside = [s for s in samples if span[1] + skip <= s[0] <= span[2]]
    if not inside:
        return None
    return {"util_mean": statistics.mean(s[1] for s in inside), "mem_peak_mib": max(s[2] for s in inside),
            "samples": len(inside)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--json")
    a = ap.parse_args()
    r = a.results
    st = steps(r)
    smi = smi_samples(r)
    report = {"failed_steps": [n for n, v in st.items() if v[0] != 0]}

    print("## Training steps: ours (train_steps) vs PyTorch eager (bench/pytorch_reference.py), alternated\n")
    print("| config | precision | optimiser (ours / torch) | ours img/s | ours ms/step | torch img/s | torch ms/step | ours/torch | ours GPU mem MiB | torch GPU mem MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    bench = lines(os.path.join(r, "bench.jsonl"))
    groups = {}
    for b in bench:
        groups.setdefault((b["config"], b["precision"], b["opt"], b["side"]), []).append(b)
    rows = []
    for config in ("coco5-vit-gpu", "coco5-vit"):
        for precision in ("fp32", "bf16"):
            for opt in ("per-tensor", "fused"):
                o, t = groups.get((config, precision, opt, "ours")), groups.get((config, precision, opt, "torch"))
                if not o or not t:
                    continue
                med = lambda v, k: statistics.median(x[k] for x in v)
                mem = lambda side: max((during(smi, st.get(f"{side}-{config}-{precision}-{opt}-r{x['round']}")) or {}).get("mem_peak_mib", 0) for x in groups[(config, precision, opt, side)])
                row = {"config": config, "precision": precision, "opt": opt,
                       "ours_ips": med(o, "images_per_sec"), "ours_ms": med(o, "step_ms_median"),
                       "torch_ips": med(t, "images_per_sec"), "torch_ms": med(t, "step_ms_median"),
                       "rounds": len(o), "ours_mem_mib": mem("ours"), "torch_mem_mib": mem("torch"),
                       "torch_allocator_peak_mib": max(x.get("cuda_max_memory_allocated_mib", 0) for x in t)}
                row["ratio"] = row["ours_ips"] / row["torch_ips"]
                rows.append(row)
                torch_opt = "foreach (default)" if opt == "per-tensor" else "fused"
                print(f"| {config} | {precision} | {opt} / {torch_opt} | {row['ours_ips']:.0f} | {row['ours_ms']:.2f} | "
                      f"{row['torch_ips']:.0f} | {row['torch_ms']:.2f} | {row['ratio']:.2f} | {row['ours_mem_mib']:.0f} | {row['torch_mem_mib']:.0f} |")
    report["bench"] = rows
    compiled = [b for b in bench if b["side"] == "torch-compile"]
    for c in compiled:
        print(f"\ntorch.compile(mode=reduce-overhead), {c['config']} {c['precision']} fused: {c['images_per_sec']:.0f} img/s, "
              f"{c['step_ms_median']:.2f} ms/step")
    report["torch_compile"] = compiled

    print("\n## Real training (vit-train fit on the GPU)\n")
    print("| run | epochs | val accuracy | train img/s | wall s | GPU util % (mean) | GPU mem MiB (peak) |")
    print("|---|---|---|---|---|---|---|")
    fits = {}
    for name in ("fit-fp32", "fit-bf16", "fit-plain", "fit-torchrun", "fit-gpu-preset"):
        path = os.path.join(r, name, "summary.json")
        if not os.path.exists(path):
            print(f"| {name} | (no summary.json) | | | | | |")
            continue
        s = json.load(open(path))
        u = during(smi, st.get(name), skip=3.0) or {}
        fits[name] = {**{k: s.get(k) for k in ("epochs", "val_accuracy", "train_images_per_sec", "wall_seconds", "precision", "device")}, **u}
        print(f"| {name} | {s.get('epochs')} | {s.get('val_accuracy', 0):.4f} | {s.get('train_images_per_sec', 0):.0f} | "
              f"{s.get('wall_seconds', 0):.1f} | {u.get('util_mean', float('nan')):.0f} | {u.get('mem_peak_mib', float('nan')):.0f} |")
    report["fits"] = fits

    cmp_log = os.path.join(r, "logs", "compare-torchrun.log")
    if os.path.exists(cmp_log):
        found = [json.loads(l) for l in open(cmp_log) if l.startswith("{")]
        if found:
            c = found[0]
            report["torchrun"] = {k: c[k] for k in ("step_losses", "max_relative_difference")}
            print(f"\ntorchrun world size 1 vs plain: {c['step_losses']} logged losses + epoch losses, "
                  f"max relative difference {c['max_relative_difference']:.2e}")

    check = os.path.join(r, "check", "gpu-check.json")
    if os.path.exists(check):
        g = json.load(open(check))
        report["provider"] = g
        ev, lat = g["eval"], g["latency"]
        print("\n## ONNX Runtime providers on the exported fit-fp32 model\n")
        print(f"check-gpu: ready={g['check_gpu']['ready']} problem={g['check_gpu']['problem']}")
        print(f"eval: CUDA provider ({ev['cuda_provider']['provider']}) accuracy {ev['cuda_provider']['accuracy']:.4f}, "
              f"CPU provider {ev['cpu_provider']['accuracy']:.4f} on {ev['cpu_provider']['total']} images; "
              f"top-1 agreement {ev['top1_agreement']:.4f}, max |probability difference| {ev['max_abs_probability_difference']:.2e}")
        print("\n| engine | batch-1 p50 ms | batch-1 p99 ms | batch-64 img/s |\n|---|---|---|---|")
        for name, l in lat.items():
            print(f"| {name} | {l['p50_ms']:.3f} | {l['p99_ms']:.3f} | {l['images_per_sec']:.0f} |")
    if report["failed_steps"]:
        print("\nFAILED steps: " + ", ".join(report["failed_steps"]))
    if a.json:
        json.dump(report, open(a.json, "w"), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
