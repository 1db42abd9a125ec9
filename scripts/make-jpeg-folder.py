#!/usr/bin/env python3
"""Writes a seeded ImageFolder of JPEGs for the data benchmark (scripts/bench-data.sh):
OUT/<class>/<n>.jpg, COUNT images of SIZE x SIZE in CLASSES folders, quality 90.

Each image is a smooth colour field (a few random blobs) with grain, so it
compresses like a photograph (about 15-25 KB at 256x256), not like noise or a
flat colour. Not committed data: generate it where the benchmark runs, delete it after.

    python scripts/make-jpeg-folder.py /tmp/jpegs --count 20000 --size 256
"""

import argparse
import os

import numpy as np
from PIL import Image


def image(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.zeros((size, size, 3), np.float32)
    rgb += rng.uniform(0, 255, 3)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.5)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
        rgb += blob[..., None] * rng.uniform(-160, 160, 3)
    rgb += rng.normal(0, 8, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    for c in range(a.classes):
        os.makedirs(os.path.join(a.out, f"class{c:02d}"), exist_ok=True)
    for n in range(a.count):
        path = os.path.join(a.out, f"class{n % a.classes:02d}", f"{n:06d}.jpg")
        Image.fromarray(image(rng, a.size)).save(path, "JPEG", quality=90)
    print(f"wrote {a.count} JPEGs of {a.size}x{a.size} in {a.classes} classes under {a.out}")


if __name__ == "__main__":
    main()
