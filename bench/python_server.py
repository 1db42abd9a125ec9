"""The Python baseline of scripts/bench-serve.sh: FastAPI + uvicorn + onnxruntime + Pillow
serving the same model as `vit-serve`'s classify endpoint (POST image bytes to
/v1/models/{name}/classify, top-5 JSON back), one ORT call per request, preprocessing
read from the model's vit.* metadata (resize to image_size square, bilinear or nearest,
/255, (x - mean) / std). Raw-pixel (uint8) models are fed NHWC u8.

    python bench/python_server.py MODEL.onnx [--port 8001] [--workers 1]
"""
import argparse
import io
import json
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image

MODEL = os.environ.get("VIT_BENCH_MODEL", "")


def load(path):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    size = int(meta["vit.image_size"])
    channels = int(meta["vit.in_channels"])
    mean = np.array(json.loads(meta["vit.mean"]), dtype=np.float32).reshape(channels, 1, 1)
    std = np.array(json.loads(meta["vit.std"]), dtype=np.float32).reshape(channels, 1, 1)
    resample = Image.NEAREST if meta.get("vit.resize") == "nearest" else Image.BILINEAR
    raw = meta.get("vit.input") == "uint8_nhwc"
    labels = json.loads(meta["vit.labels"])
    return sess, size, channels, mean, std, resample, raw, labels


app = FastAPI()
state = {}


@app.on_event("startup")
def startup():
    state["model"] = load(MODEL)


@app.post("/v1/models/{name}/classify")
async def classify(name: str, request: Request, top_k: int = 5):
    # The body is read on the event loop; decoding and inference run on Starlette's thread
    # pool (as a careful FastAPI user writes it: blocking work inside `async def` would
    # serialise every request; ONNX Runtime and Pillow release the GIL while they work).
    body = await request.body()
    return await run_in_threadpool(infer, body, top_k)


def infer(body, top_k):
    sess, size, channels, mean, std, resample, raw, labels = state["model"]
    try:
        img = Image.open(io.BytesIO(body))
        img = img.convert("L" if channels == 1 else "RGB")
    except Exception as e:  # noqa: BLE001 - any decode failure is the client's
        raise HTTPException(400, f"cannot decode the image: {e}")
    if img.size != (size, size):
        img = img.resize((size, size), resample)
    hwc = np.asarray(img, dtype=np.uint8).reshape(size, size, channels)
    if raw:
        x = hwc[None]
    else:
        x = ((hwc.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std)[None]
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[:top_k]
    return [{"label": labels[i], "score": float(p[i])} for i in order]


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    os.environ["VIT_BENCH_MODEL"] = os.path.abspath(args.model)
    uvicorn.run("python_server:app", host="127.0.0.1", port=args.port, workers=args.workers, log_level="warning",
                app_dir=os.path.dirname(os.path.abspath(__file__)))
