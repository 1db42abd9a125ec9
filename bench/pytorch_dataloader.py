#!/usr/bin/env python3
"""The PyTorch anchor of scripts/bench-data.sh: torchvision ImageFolder +
RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize through a
torch DataLoader with N worker processes, shuffled, batch 64. Prints one JSON
line like examples/data_throughput.rs: images/s over the batches after the
first WARMUP (worker start-up and queue filling excluded, as ours), and the
peak resident memory of the process tree (the loader and its workers; RSS
summed over the processes, sampled every 20 ms from /proc, so pages the
forked workers share with the loader count once per process).

    python bench/pytorch_dataloader.py DIR --workers 2 [--batches 300] [--size 224]
"""

import argparse
import json
import os
import threading
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class PeakSampler(threading.Thread):
    """Samples the process tree's RSS until stopped; `peak` is the largest seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss(os.getpid()))
            self.stop.wait(0.02)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=int, default=None, help="stop after this many batches (default: one epoch)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(a.size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    data = datasets.ImageFolder(a.data, transform=tf)
    loader = DataLoader(data, batch_size=a.batch_size, shuffle=True, num_workers=a.workers)
    sampler = PeakSampler()
    sampler.start()
    seen, images, started = 0, 0, time.perf_counter()
    for x, y in loader:
        seen += 1
        if seen == a.warmup:
            started = time.perf_counter()
        elif seen > a.warmup:
            images += len(y)
        if a.batches is not None and seen >= a.batches:
            break
    seconds = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    line = {
        "impl": "pytorch",
        "workers": a.workers,
        "image_size": a.size,
        "images": images,
        "seconds": seconds,
        "images_per_sec": images / seconds,
        "peak_rss_mib": sampler.peak / 2**20,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
