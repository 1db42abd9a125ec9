// Opens the page in headless Chromium and prints its answer for one image.
//
//   node drive.mjs MODEL.onnx IMAGE [--chromium /usr/bin/chromium]
//
// Serves this folder and the two files on 127.0.0.1 (a free port), loads
// index.html?model=...&image=..., waits for the answer and prints one JSON
// line: { top1, probabilities, labels, ms_since_navigation }. Exits 1 with
// the page's error message when it fails.

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flag = args.indexOf("--chromium");
const chromium = flag >= 0 ? args.splice(flag, 2)[1] : "/usr/bin/chromium";
const [modelPath, imagePath] = args;
if (!modelPath || !imagePath) {
  console.error("usage: node drive.mjs MODEL.onnx IMAGE [--chromium PATH]");
  process.exit(2);
}

const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm" };
const extra = { "/files/model.onnx": path.resolve(modelPath), [`/files/image${path.extname(imagePath)}`]: path.resolve(imagePath) };
const server = http.createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, "http://x").pathname);
  const file = extra[url] ?? path.join(here, path.normalize(url === "/" ? "/index.html" : url));
  if (!extra[url] && !file.startsWith(here)) return res.writeHead(403).end();
  fs.readFile(file, (err, data) => {
    if (err) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" }).end(data);
  });
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const port = server.address().port;

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let code = 0;
try {
  const page = await browser.newPage();
  const image = Object.keys(extra)[1];
  await page.goto(`http://127.0.0.1:${port}/index.html?model=/files/model.onnx&image=${image}`);
  await page.waitForFunction(() => document.body.dataset.result || document.body.dataset.error, { timeout: 120000 });
  const { result, error } = await page.evaluate(() => ({ ...document.body.dataset }));
  if (error) {
    console.error(`the page failed: ${error}`);
    code = 1;
  } else {
    console.log(result);
  }
} finally {
  await browser.close();
  server.close();
}
process.exit(code);
