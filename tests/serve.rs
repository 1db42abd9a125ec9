//! `vit-serve` over real HTTP on 127.0.0.1: the Open Inference Protocol
//! shapes (plain JSON and Python's `tritonclient[http]`), `classify` against
//! `vit-infer --json`, batching on and off, malformed requests, overload,
//! SIGTERM, reload; and `vit::serve`'s router mounted inside another app.
//!
//! Run with `--features export,serve`; the tritonclient test needs the venv
//! (`scripts/setup.sh`) and fails when it is missing.

#![cfg(all(feature = "serve", feature = "export"))]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{json, Value};
use vit::config::ViTConfig;

mod common;
mod serve_support;
use common::infer::open;
use common::{small, write_model, write_png, Lcg, LABELS};
use serve_support::{multipart, request, Server};

/// A request's FP32 pixel_values for `n` seeded images of the small model.
fn pixels(cfg: &ViTConfig, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Lcg(seed);
    (0..n * cfg.in_channels * cfg.image_size * cfg.image_size).map(|_| rng.normal()).collect()
}

fn infer_body(cfg: &ViTConfig, data: &[f32], n: usize) -> Value {
    let s = cfg.image_size;
    json!({ "id": "t1", "inputs": [{ "name": "pixel_values", "shape": [n, cfg.in_channels, s, s], "datatype": "FP32", "data": data }] })
}

fn logits_of(v: &Value) -> Vec<f32> {
    v["outputs"][0]["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst <= tol, "max difference {worst} > {tol}: {a:?} vs {b:?}");
}

fn model(dir: &Path, seed: u64) -> PathBuf {
    write_model(dir, "m.onnx", &small(3), seed)
}

fn jpeg(path: &Path, w: u32, h: u32, seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, (rng.uniform() * 255.0) as u8])
    });
    img.save(path).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn oip_endpoints_answer_plain_json_and_tritonclient() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = model(dir.path(), 3);
    let server = Server::start(&path, &[]);
    assert_eq!(server.get_json("/v2/health/live").0, 200);
    assert_eq!(server.get_json("/v2/health/ready").0, 200);
    assert_eq!(server.get_json("/v2/models/m/ready").0, 200);
    let (code, meta) = server.get_json("/v2");
    assert_eq!((code, meta["name"].as_str()), (200, Some("vit-serve")));
    let (code, meta) = server.get_json("/v2/models/m");
    assert_eq!(code, 200);
    assert_eq!(meta["inputs"][0], json!({ "name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, 16, 16] }));
    assert_eq!(meta["outputs"][0], json!({ "name": "logits", "datatype": "FP32", "shape": [-1, 3] }));

    let data = pixels(&cfg, 2, 9);
    let (code, out) = server.post_json("/v2/models/m/infer", &infer_body(&cfg, &data, 2));
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["id"], "t1");
    assert_eq!(out["model_name"], "m");
    assert_eq!(out["outputs"][0]["shape"], json!([2, 3]));
    let expected = open(&path).logits(&data, 2).unwrap();
    assert_close(&logits_of(&out), &expected, 1e-5);

    // The same through tritonclient, as a KServe v2 client sees it.
    let python = std::env::var("VIT_VENV").map(|v| PathBuf::from(v).join("bin/python")).unwrap_or_else(|_| {
        panic!("VIT_VENV is not set: `source scripts/env.sh` (tritonclient[http] lives in the venv, scripts/setup.sh)")
    });
    let script = r#"
import json, sys
import numpy as np
import tritonclient.http as httpclient
c = httpclient.InferenceServerClient(url=sys.argv[1])
assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("m")
meta = c.get_model_metadata("m")
x = np.array(json.loads(sys.argv[2]), dtype=np.float32).reshape(2, 3, 16, 16)
inp = httpclient.InferInput("pixel_values", list(x.shape), "FP32")
inp.set_data_from_numpy(x, binary_data=False)
out = httpclient.InferRequestedOutput("logits", binary_data=False)
res = c.infer("m", [inp], outputs=[out])
print(json.dumps({"meta": meta, "logits": res.as_numpy("logits").ravel().tolist()}))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, &server.addr.to_string(), &serde_json::to_string(&data).unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (scripts/setup.sh installs the venv)", python.display()));
    assert!(
        out.status.success(),
        "tritonclient failed (scripts/setup.sh installs tritonclient[http]): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["meta"]["inputs"][0]["shape"], json!([-1, 3, 16, 16]));
    let got: Vec<f32> = v["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_close(&got, &expected, 1e-5);
}

#[test]
fn classify_scores_equal_vit_infer_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = model(dir.path(), 5);
    let png = dir.path().join("a.png");
    write_png(&png, 23, 17, 4);
    let jpg = dir.path().join("b.jpg");
    let jpg_bytes = jpeg(&jpg, 40, 30, 8);
    let server = Server::start(&path, &[]);
    for file in [&png, &jpg] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vit-infer"))
            .args(["--ep", "cpu", "--json", "--top-k", "3", "--model"])
            .arg(&path)
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let want: Value = serde_json::from_slice(&out.stdout).unwrap();
        let bytes = std::fs::read(file).unwrap();
        let raw = server.request("POST", "/v1/models/m/classify?top_k=3", "application/octet-stream", &bytes);
        let (ct, form) = multipart(&bytes);
        let multi = server.request("POST", "/v1/models/m/classify?top_k=3", &ct, &form);
        for got in [raw, multi] {
            assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
            let got = got.json();
            let got = got.as_array().unwrap();
            assert_eq!(got.len(), 3);
            for (g, w) in got.iter().zip(want["top"].as_array().unwrap()) {
                assert_eq!(g["label"], w["label"]);
                let (gs, ws) = (g["score"].as_f64().unwrap(), w["probability"].as_f64().unwrap());
                assert!((gs - ws).abs() <= 1e-6, "{} scored {gs} by vit-serve, {ws} by vit-infer", file.display());
            }
        }
    }
    assert!(LABELS.contains(
        &server.request("POST", "/v1/models/m/classify?top_k=1", "", &jpg_bytes).json()[0]["label"].as_str().unwrap()
    ));
}

/// Sends `n` concurrent infer requests of one image each; returns (status, logits) per request index.
fn concurrent_infer(server: &Server, cfg: &ViTConfig, n: usize) -> Vec<(u16, Vec<f32>)> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let body = infer_body(cfg, &pixels(cfg, 1, 100 + i as u64), 1).to_string();
            let (addr, barrier) = (server.addr, Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let r = request(addr, "POST", "/v2/models/m/infer", "application/json", body.as_bytes()).unwrap();
                let logits = if r.status == 200 { logits_of(&r.json()) } else { Vec::new() };
                (r.status, logits)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn batching_on_and_off_give_equal_answers_and_batches_form() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = model(dir.path(), 7);
    let off = Server::start(&path, &["--max-batch", "1"]);
    let unbatched = concurrent_infer(&off, &cfg, 16);
    drop(off);
    let on = Server::start(&path, &["--max-batch", "8", "--max-delay-us", "2000"]);
    let mut batched_seen = false;
    // On a busy machine one round may not overlap: a few rounds must.
    for _ in 0..5 {
        let batched = concurrent_infer(&on, &cfg, 16);
        for ((s1, a), (s2, b)) in unbatched.iter().zip(&batched) {
            assert_eq!((*s1, *s2), (200, 200));
            assert_close(a, b, 1e-5);
        }
        let metrics = String::from_utf8(on.request("GET", "/metrics", "", b"").body).unwrap();
        let count = |key: &str| -> f64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} in {metrics}"))
                .trim()
                .parse()
                .unwrap()
        };
        let (ones, batches) = (count("vit_batch_size_bucket{le=\"1\"}"), count("vit_batch_size_count"));
        assert!(metrics.contains("vit_in_flight") && metrics.contains("vit_queue_depth{model=\"m\"}"), "{metrics}");
        assert!(metrics.contains("vit_requests_total{model=\"m\",endpoint=\"/v2/models/{name}/infer\",status=\"200\"}"));
        if ones < batches {
            batched_seen = true;
            break;
        }
    }
    assert!(batched_seen, "no batch of more than one image in 5 rounds of 16 concurrent requests");
}

/// A PNG of `w` x `h` made from a 16x16 one by rewriting its header (and its CRC):
/// a few hundred bytes that claim gigapixels.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::new(16, 16).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    bytes
}

#[test]
fn malformed_requests_get_4xx_naming_the_problem_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = model(dir.path(), 11);
    let server = Server::start(&path, &["--max-body", "64KiB", "--read-timeout-ms", "500"]);
    let jpg = jpeg(&dir.path().join("x.jpg"), 64, 64, 1);
    let good = infer_body(&cfg, &pixels(&cfg, 1, 1), 1);
    let mut wrong_type = good.clone();
    wrong_type["inputs"][0]["datatype"] = json!("INT64");
    let mut wrong_shape = good.clone();
    wrong_shape["inputs"][0]["shape"] = json!([1, 3, 8, 8]);
    let mut short = good.clone();
    short["inputs"][0]["data"] = json!([1.0, 2.0]);
    let mut wrong_name = good.clone();
    wrong_name["inputs"][0]["name"] = json!("image");
    let infer = "/v2/models/m/infer";
    let classify = "/v1/models/m/classify";
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (infer, "bad JSON", b"{\"inputs\": [".to_vec(), 400, "not an inference request in JSON"),
        (infer, "wrong datatype", wrong_type.to_string().into_bytes(), 400, "datatype INT64"),
        (infer, "wrong shape", wrong_shape.to_string().into_bytes(), 400, "shape [1, 3, 8, 8]"),
        (infer, "too few values", short.to_string().into_bytes(), 400, "has 2 values"),
        (infer, "wrong input name", wrong_name.to_string().into_bytes(), 400, "unknown input `image`"),
        ("/v2/models/nope/infer", "unknown model", good.to_string().into_bytes(), 404, "unknown model `nope`"),
        (classify, "empty body", Vec::new(), 400, "empty body"),
        (classify, "non-image bytes", b"hello, not an image".to_vec(), 400, "not an image"),
        (classify, "truncated JPEG", jpg[..jpg.len() / 2].to_vec(), 400, "cut off"),
        (classify, "decompression bomb", bomb_png(100_000, 100_000), 400, "decompression bomb"),
        (classify, "body over the limit", vec![0xff; 100 << 10], 413, "over the limit of 65536 bytes"),
    ];
    for (route, what, body, status, needle) in cases {
        let r = server.request("POST", route, "application/octet-stream", &body);
        assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
        let msg = r.error();
        assert!(msg.contains(needle), "{what}: `{msg}` does not say `{needle}`");
    }
    // A client that stops mid-body: its connection ends, the server carries on.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /v1/models/m/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n0123456789").unwrap();
    let r = serve_support::read_response(&mut s).expect("an answer after the read timeout");
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("stopped arriving"), "{}", r.error());
    // Headers sent byte by byte and never finished: the connection is closed.
    let mut slow = std::net::TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    slow.write_all(b"GET /v2/health/li").unwrap();
    let start = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut slow, &mut buf);
    assert!(start.elapsed() < Duration::from_secs(8), "a slow client held its connection {:?}", start.elapsed());
    // Still serving.
    assert_eq!(server.post_json(infer, &good).0, 200);
    assert_eq!(server.get_json("/v2/health/live").0, 200);
}

#[test]
fn overload_answers_only_200_or_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    // Larger than the small model so that requests pile up on 2 cores.
    let cfg = ViTConfig { image_size: 64, patch_size: 8, embed_dim: 96, depth: 4, num_heads: 4, ..small(3) };
    let path = write_model(dir.path(), "m.onnx", &cfg, 1);
    let server = Server::start(&path, &["--queue", "1", "--max-batch", "1"]);
    let results = concurrent_infer(&server, &cfg, 48);
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert!(statuses.contains(&200) && statuses.contains(&503), "{statuses:?}");
    let body = infer_body(&cfg, &pixels(&cfg, 1, 1), 1).to_string();
    // One refusal, looked at closely.
    let refused = (0..200).find_map(|_| {
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let (addr, body) = (server.addr, body.clone());
                std::thread::spawn(move || {
                    request(addr, "POST", "/v2/models/m/infer", "application/json", body.as_bytes())
                })
            })
            .collect();
        burst.into_iter().map(|h| h.join().unwrap().unwrap()).find(|r| r.status == 503)
    });
    let r = refused.expect("a 503 among bursts of 8 with a queue of 1");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.error().contains("queue is full"), "{}", r.error());
}

#[test]
fn sigterm_answers_or_refuses_every_request_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ViTConfig { image_size: 64, patch_size: 8, embed_dim: 96, depth: 4, num_heads: 4, ..small(3) };
    let path = write_model(dir.path(), "m.onnx", &cfg, 1);
    let mut server = Server::start(&path, &["--max-batch", "4"]);
    let body = infer_body(&cfg, &pixels(&cfg, 1, 1), 1).to_string();
    let handles: Vec<_> = (0..24)
        .map(|i| {
            let (addr, body) = (server.addr, body.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10 * i));
                request(addr, "POST", "/v2/models/m/infer", "application/json", body.as_bytes())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(60));
    server.terminate();
    let mut answered = 0;
    for h in handles {
        match h.join().unwrap() {
            Ok(r) => {
                assert!(r.status == 200 || r.status == 503, "{} {}", r.status, String::from_utf8_lossy(&r.body));
                answered += usize::from(r.status == 200);
            }
            // Refused or closed before a request was read: never a timeout.
            Err(e) => {
                assert!(e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut, "{e}")
            }
        }
    }
    assert!(answered > 0, "no request was answered");
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0), "{}", server.stderr());
    assert!(server.stderr().contains("SIGTERM received"), "{}", server.stderr());
}

#[test]
fn sessions_share_the_cores_unless_instances_or_threads_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = write_model(dir.path(), "m.onnx", &cfg, 1);
    let data = pixels(&cfg, 2, 4);
    let expected = open(&path).logits(&data, 2).unwrap();
    // No --instances or --threads: the CPU's cores shared among auto_instances' sessions.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let auto = match vit::serve::auto_instances(cores) {
        (1, _) => "1 session(s) on cpu, ONNX Runtime's default threads each".to_string(),
        (n, threads) => format!("{n} session(s) on cpu, {threads} thread(s) each"),
    };
    for (args, sessions) in [
        (&[][..], auto),
        (&["--threads", "1"][..], "1 session(s) on cpu, 1 thread(s) each".to_string()),
        (&["--instances", "3"][..], "3 session(s) on cpu, ONNX Runtime's default threads each".to_string()),
    ] {
        let server = Server::start_cpu(&path, args);
        let (code, v) = server.post_json("/v2/models/m/infer", &infer_body(&cfg, &data, 2));
        assert_eq!(code, 200, "{v}");
        assert_close(&logits_of(&v), &expected, 1e-5);
        assert!(server.stderr().contains(&sessions), "{args:?}: expected `{sessions}` in:\n{}", server.stderr());
    }
}

#[test]
fn reload_swaps_a_good_file_and_keeps_the_old_model_for_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("a")).unwrap();
    std::fs::create_dir_all(repo.join("b/3")).unwrap();
    let a = write_model(&repo.join("a"), "model.onnx", &cfg, 1);
    write_model(&repo.join("b/3"), "model.onnx", &cfg, 2);
    // Two sessions per model: a reload replaces both.
    let server = Server::start(&repo, &["--instances", "2"]);
    assert_eq!(server.get_json("/v2/models/b").1["versions"], json!(["3"]));
    let data = pixels(&cfg, 1, 5);
    let body = infer_body(&cfg, &data, 1);
    let infer_a = || logits_of(&server.post_json("/v2/models/a/infer", &body).1);
    assert_close(&infer_a(), &open(&a).logits(&data, 1).unwrap(), 1e-5);

    let next = write_model(dir.path(), "next.onnx", &cfg, 9);
    std::fs::copy(&next, &a).unwrap();
    let (code, v) = server.post_json("/v2/repository/models/a/load", &json!({}));
    assert_eq!(code, 200, "{v}");
    let expected = open(&next).logits(&data, 1).unwrap();
    assert_close(&infer_a(), &expected, 1e-5);

    std::fs::write(&a, b"not an onnx file").unwrap();
    let (code, v) = server.post_json("/v2/repository/models/a/load", &json!({}));
    assert_eq!(code, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("model `a`") && msg.contains("keeps serving"), "{msg}");
    assert_close(&infer_a(), &expected, 1e-5);
    assert_eq!(server.post_json("/v2/repository/models/zzz/load", &json!({})).0, 404);
}

#[test]
fn bad_models_and_flags_exit_2_and_help_has_examples() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vit-serve")).args(args).output().unwrap()
    };
    let missing = dir.path().join("missing.onnx");
    let out = run(&[missing.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let broken = dir.path().join("broken.onnx");
    std::fs::write(&broken, b"junk").unwrap();
    let out = run(&[broken.as_os_str(), "--ep".as_ref(), "cpu".as_ref()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("model `broken`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--help".as_ref()]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["Examples:", "Exit status:", "--max-delay-us", "--max-body", "--queue", "--timeout-ms", "--instances"]
    {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn the_library_router_mounts_inside_another_app() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = model(dir.path(), 13);
    let opts = vit::serve::ServeOptions {
        classifier: common::infer::cpu(),
        max_delay: Duration::from_micros(500),
        ..Default::default()
    };
    let repo = vit::serve::Repository::open(&path, opts).unwrap();
    assert_eq!(repo.names(), ["m"]);
    let app = axum::Router::new().nest("/vit", repo.router());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(vit::serve::serve(listener, app, Duration::from_secs(5), Duration::from_secs(5), async {
        let _ = stopped.await;
    }));
    let data = pixels(&cfg, 3, 21);
    let body = infer_body(&cfg, &data, 3).to_string();
    let r = request(addr, "POST", "/vit/v2/models/m/infer", "application/json", body.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_close(&logits_of(&r.json()), &open(&path).logits(&data, 3).unwrap(), 1e-5);
    assert_eq!(request(addr, "GET", "/v2/health/live", "", b"").unwrap().status, 404, "only under /vit");
    stop.send(()).unwrap();
    assert!(rt.block_on(server).unwrap(), "drained");
    repo.close();
    assert!(repo.metrics().render().contains("vit_batch_size_count 1"));
}

#[test]
fn a_raw_pixel_model_takes_uint8_nhwc_and_refuses_fp32() {
    use vit::format::{InputKind, ModelFormat};
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = dir.path().join("raw.onnx");
    let opts = vit::onnx::ExportOptions {
        format: ModelFormat { input: InputKind::Uint8Nhwc, ..Default::default() },
        ..Default::default()
    };
    vit::onnx::write_model(&path, &common::metadata(&cfg), &common::random_weights(&cfg, 3, 0.3), &opts).unwrap();
    let server = Server::start(&path, &[]);
    let (code, meta) = server.get_json("/v2/models/raw");
    assert_eq!(code, 200);
    assert_eq!(meta["inputs"][0]["datatype"], "UINT8");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 16, 16, 3]));
    let name = meta["inputs"][0]["name"].as_str().unwrap().to_string();
    let mut rng = Lcg(4);
    let (n, hw) = (2, 16 * 16);
    let nhwc: Vec<u8> = (0..n * hw * 3).map(|_| (rng.uniform() * 255.0) as u8).collect();
    // The library takes CHW: transpose each image.
    let mut chw = vec![0u8; nhwc.len()];
    for i in 0..n {
        for p in 0..hw {
            for c in 0..3 {
                chw[i * 3 * hw + c * hw + p] = nhwc[i * 3 * hw + p * 3 + c];
            }
        }
    }
    let expected = open(&path).logits_u8(&chw, n).unwrap();
    let body = json!({ "inputs": [{ "name": name, "shape": [n, 16, 16, 3], "datatype": "UINT8", "data": nhwc }] });
    let (code, out) = server.post_json("/v2/models/raw/infer", &body);
    assert_eq!(code, 200, "{out}");
    assert_close(&logits_of(&out), &expected, 1e-5);
    let mut float = body.clone();
    float["inputs"][0]["datatype"] = json!("FP32");
    let (code, out) = server.post_json("/v2/models/raw/infer", &float);
    assert_eq!(code, 400);
    assert!(out["error"].as_str().unwrap().contains("takes UINT8"), "{out}");
    let mut wide = body.clone();
    wide["inputs"][0]["data"][0] = json!(300);
    let (code, out) = server.post_json("/v2/models/raw/infer", &wide);
    assert_eq!(code, 400);
    assert!(out["error"].as_str().unwrap().contains("not a UINT8"), "{out}");
}

#[test]
fn a_request_past_its_deadline_gets_504_and_the_next_one_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(3);
    let path = model(dir.path(), 2);
    // A lone request waits 300 ms for its batch to fill: longer than its 100 ms deadline.
    let server = Server::start(&path, &["--max-batch", "8", "--max-delay-us", "300000", "--timeout-ms", "100"]);
    let body = infer_body(&cfg, &pixels(&cfg, 1, 1), 1);
    let start = std::time::Instant::now();
    let (code, out) = server.post_json("/v2/models/m/infer", &body);
    assert_eq!(code, 504, "{out}");
    assert!(out["error"].as_str().unwrap().contains("deadline of 100 ms"), "{out}");
    assert!(start.elapsed() < Duration::from_millis(290), "answered after {:?}", start.elapsed());
    // A full batch does not wait: 8 images in one request are answered in time.
    let (code, out) = server.post_json("/v2/models/m/infer", &infer_body(&cfg, &pixels(&cfg, 8, 2), 8));
    assert_eq!(code, 200, "{out}");
    let metrics = String::from_utf8(server.request("GET", "/metrics", "", b"").body).unwrap();
    assert!(metrics.contains("status=\"504\"} 1"), "{metrics}");
}
