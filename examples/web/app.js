// Classifies an image with a vit-train ONNX export in the browser.
//
// The model says how to feed it: its metadata_props (read from the ONNX bytes
// here, since onnxruntime-web does not expose them) carry the labels, image
// size, channels, mean/std, resize filter and input kind (`vit.input`:
// normalised float32 NCHW, or uint8 NHWC normalised inside the graph). The
// image is decoded by the browser, resized exactly as vit's Preprocessor
// resizes (the `image` crate's separable triangle filter, in f32), and
// normalised with the same f32 operations in the same order, so the page's
// probabilities match vit-infer's.
//
// URL parameters: ?model=URL loads a model, &image=URL classifies an image
// (both also from the file pickers). The page sets `document.body.dataset.result`
// to a JSON summary of the last answer (for scripted checks).

import * as ort from "./vendor/ort.wasm.min.mjs";

ort.env.wasm.wasmPaths = new URL("./vendor/", import.meta.url).href;
ort.env.wasm.numThreads = 1;

const $ = (id) => document.getElementById(id);
let model = null; // { session, meta }

// ---- ONNX metadata: ModelProto field 14 (metadata_props: key = 1, value = 2) ----

function readVarint(bytes, pos) {
  let value = 0, shift = 1;
  for (;;) {
    const b = bytes[pos++];
    value += (b & 0x7f) * shift;
    if (b < 0x80) return [value, pos];
    shift *= 128;
  }
}

// Top-level fields of a protobuf message: [{ field, bytes }] for length-delimited ones.
function messageFields(bytes) {
  const fields = [];
  let pos = 0;
  while (pos < bytes.length) {
    let key;
    [key, pos] = readVarint(bytes, pos);
    const field = Math.floor(key / 8), wire = key & 7;
    if (wire === 0) [, pos] = readVarint(bytes, pos);
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let len;
      [len, pos] = readVarint(bytes, pos);
      fields.push({ field, bytes: bytes.subarray(pos, pos + len) });
      pos += len;
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
  }
  return fields;
}

export function readMetadataProps(bytes) {
  const text = new TextDecoder();
  const props = {};
  for (const f of messageFields(bytes)) {
    if (f.field !== 14) continue;
    let key = "", value = "";
    for (const e of messageFields(f.bytes)) {
      if (e.field === 1) key = text.decode(e.bytes);
      if (e.field === 2) value = text.decode(e.bytes);
    }
    props[key] = value;
  }
  return props;
}

export function modelInfo(props) {
  const need = (k) => {
    if (!(k in props)) throw new Error(`the model has no ${k} metadata: export it with vit-train`);
    return props[k];
  };
  return {
    labels: JSON.parse(need("vit.labels")),
    size: Number(need("vit.image_size")),
    channels: Number(need("vit.in_channels")),
    mean: JSON.parse(need("vit.mean")).map(Math.fround),
    std: JSON.parse(need("vit.std")).map(Math.fround),
    resize: need("vit.resize"),
    input: props["vit.input"] ?? "float32_nchw",
    precision: props["vit.precision"] ?? "fp32",
  };
}

// ---- preprocessing, as vit::Preprocessor::prepare / normalize ----

const f = Math.fround;

// One pass of the image crate's separable resize (`vertical_sample` /
// `horizontal_sample`) over RGBA f32 pixels: triangle kernel of support 1
// scaled by the reduction ratio, weights normalised to sum 1.
function sample(src, w, h, newLen, vertical) {
  const oldLen = vertical ? h : w;
  const ratio = f(oldLen / newLen);
  const sratio = ratio < 1 ? 1 : ratio;
  const support = f(1 * sratio);
  const ow = vertical ? w : newLen, oh = vertical ? newLen : h;
  const out = new Float32Array(ow * oh * 4);
  for (let o = 0; o < newLen; o++) {
    const center = f(f(o + 0.5) * ratio);
    const left = Math.min(Math.max(Math.floor(f(center - support)), 0), oldLen - 1);
    const right = Math.min(Math.max(Math.ceil(f(center + support)), left + 1), oldLen);
    const c = f(center - 0.5);
    const ws = [];
    let sum = 0;
    for (let i = left; i < right; i++) {
      const x = Math.abs(f(f(i - c) / sratio));
      const wgt = x < 1 ? f(1 - x) : 0;
      ws.push(wgt);
      sum = f(sum + wgt);
    }
    for (let k = 0; k < ws.length; k++) ws[k] = f(ws[k] / sum);
    const other = vertical ? w : h;
    for (let t = 0; t < other; t++) {
      const acc = [0, 0, 0, 0];
      for (let k = 0; k < ws.length; k++) {
        const i = left + k;
        const p = vertical ? (i * w + t) * 4 : (t * w + i) * 4;
        for (let ch = 0; ch < 4; ch++) acc[ch] = f(acc[ch] + f(src[p + ch] * ws[k]));
      }
      const q = vertical ? (o * w + t) * 4 : (t * ow + o) * 4;
      for (let ch = 0; ch < 4; ch++) out[q + ch] = acc[ch];
    }
  }
  return out;
}

// RGBA u8 image -> RGBA u8 of side `size`, as `resize_exact(size, size, filter)`.
function resize(rgba, w, h, size, filter) {
  if (w === size && h === size) return rgba;
  const out = new Uint8ClampedArray(size * size * 4);
  if (filter === "nearest") {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const sx = Math.min(Math.floor(f(f(x * w) / size)), w - 1), sy = Math.min(Math.floor(f(f(y * h) / size)), h - 1);
        for (let ch = 0; ch < 4; ch++) out[(y * size + x) * 4 + ch] = rgba[(sy * w + sx) * 4 + ch];
      }
    }
    return out;
  }
  const tall = sample(Float32Array.from(rgba), w, h, size, true);
  const done = sample(tall, w, size, size, false);
  for (let i = 0; i < done.length; i++) out[i] = Math.round(Math.min(Math.max(done[i], 0), 255));
  return out;
}

// The model's input tensor for one decoded RGBA image.
export function inputTensor(rgba, w, h, info) {
  const s = info.size, hw = s * s;
  const px = resize(rgba, w, h, s, info.resize);
  const c = info.channels;
  const value = (i, ch) => {
    if (c === 3) return px[i * 4 + ch];
    // Rec. 709 luma, as the image crate's into_luma8.
    return Math.round((2126 * px[i * 4] + 7152 * px[i * 4 + 1] + 722 * px[i * 4 + 2]) / 10000);
  };
  if (info.input === "uint8_nhwc") {
    const data = new Uint8Array(hw * c);
    for (let i = 0; i < hw; i++) for (let ch = 0; ch < c; ch++) data[i * c + ch] = value(i, ch);
    return new ort.Tensor("uint8", data, [1, s, s, c]);
  }
  const data = new Float32Array(c * hw);
  for (let ch = 0; ch < c; ch++) {
    for (let i = 0; i < hw; i++) data[ch * hw + i] = f(f(f(value(i, ch) / 255) - info.mean[ch]) / info.std[ch]);
  }
  return new ort.Tensor("float32", data, [1, c, s, s]);
}

export function softmax(logits) {
  const max = Math.max(...logits);
  const e = logits.map((v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

// ---- page ----

async function loadModel(bytes, name) {
  $("status").textContent = `loading ${name}...`;
  const meta = modelInfo(readMetadataProps(bytes));
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  model = { session, meta };
  $("status").textContent =
    `${name}: ${meta.labels.length} classes, ${meta.size}x${meta.size}, ${meta.input} input, ${meta.precision}. Pick an image.`;
}

async function decode(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = $("preview");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  ctx.drawImage(bitmap, 0, 0);
  return { rgba: ctx.getImageData(0, 0, bitmap.width, bitmap.height).data, w: bitmap.width, h: bitmap.height };
}

async function classify(blob, name) {
  if (!model) throw new Error("load a model first");
  const { rgba, w, h } = await decode(blob);
  const input = inputTensor(rgba, w, h, model.meta);
  const out = await model.session.run({ [model.session.inputNames[0]]: input });
  const logits = Array.from(out[model.session.outputNames[0]].data);
  const probs = softmax(logits);
  const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  $("top5").innerHTML = order
    .map(([p, i]) => `<tr><td>${model.meta.labels[i]}</td><td>${(100 * p).toFixed(2)}%</td></tr>`)
    .join("");
  $("status").textContent = `${name}: ${model.meta.labels[order[0][1]]}`;
  document.body.dataset.result = JSON.stringify({
    image: name,
    top1: model.meta.labels[order[0][1]],
    probabilities: probs,
    labels: model.meta.labels,
    ms_since_navigation: performance.now(),
  });
}

function report(e) {
  $("error").textContent = String(e?.message ?? e);
  document.body.dataset.error = String(e?.message ?? e);
}

$("model-file").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (file) await loadModel(new Uint8Array(await file.arrayBuffer()), file.name).catch(report);
});
$("image-file").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (file) await classify(file, file.name).catch(report);
});

const params = new URLSearchParams(location.search);
(async () => {
  if (params.get("model")) {
    const url = params.get("model");
    const res = await fetch(url);
    if (!res.ok) throw new Error(`cannot fetch ${url}: ${res.status}`);
    await loadModel(new Uint8Array(await res.arrayBuffer()), url);
  }
  if (params.get("image")) {
    const url = params.get("image");
    const res = await fetch(url);
    if (!res.ok) throw new Error(`cannot fetch ${url}: ${res.status}`);
    await classify(await res.blob(), url);
  }
})().catch(report);
