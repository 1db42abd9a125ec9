//! The CUDA provider's start-up on a machine without a GPU: the folders the
//! CUDA libraries are looked for in and their order, what counts as found
//! (soname and major version), the error text for each missing piece, and
//! `vit-infer --ep cuda|auto` and `--check-gpu` run against the GPU build of
//! ONNX Runtime (`VIT_ORT_GPU_DYLIB`, installed by scripts/setup.sh), which
//! must say that the driver is missing. Also runs `scripts/gpu-check.sh --dry`.
//!
//! Run with `--features export,cli`.

#![cfg(all(feature = "cli", feature = "export"))]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use vit::infer::{resolve, CudaError, CudaSearch, DirSource, SearchDir, CUDA_LIBRARIES};

mod common;
use common::{small, write_model, write_png};

fn touch(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
    path.to_path_buf()
}

fn dir(path: &Path, source: DirSource) -> SearchDir {
    SearchDir { path: path.to_path_buf(), source }
}

const CUDART: usize = 0;

#[test]
fn folders_are_searched_in_the_documented_order() {
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    let venv_site = p("venv/lib/python3.11/site-packages");
    std::fs::create_dir_all(venv_site.join("nvidia/cudnn/lib")).unwrap();
    std::fs::create_dir_all(venv_site.join("nvidia/cu13/lib")).unwrap();
    std::fs::create_dir_all(venv_site.join("nvidia/empty")).unwrap(); // no lib/: not searched
    let ort = touch(&p("target/onnxruntime/capi/libonnxruntime.so.1.31.1"));
    std::fs::create_dir_all(p("target/nvidia/cu13/lib")).unwrap();
    let search = CudaSearch {
        option_dirs: vec![p("opt")],
        env_dirs: Some(std::env::join_paths([p("env1"), p("env2"), p("opt")]).unwrap()),
        venv: Some(p("venv")),
        runtime_library: Some(ort),
        cuda_home: Some(p("cuda")),
        cuda_path: Some(p("cuda-path")),
        system_dirs: vec![p("sys"), p("env1")],
    };
    let got: Vec<(PathBuf, DirSource)> = search.dirs().into_iter().map(|d| (d.path, d.source)).collect();
    let want = vec![
        (p("opt"), DirSource::Option),
        (p("env1"), DirSource::Env),
        (p("env2"), DirSource::Env),
        (venv_site.join("nvidia/cu13/lib"), DirSource::Venv),
        (venv_site.join("nvidia/cudnn/lib"), DirSource::Venv),
        (p("target/nvidia/cu13/lib"), DirSource::Venv),
        (p("cuda/lib64"), DirSource::CudaHome),
        (p("cuda/lib"), DirSource::CudaHome),
        (p("cuda-path/lib64"), DirSource::CudaPath),
        (p("cuda-path/lib"), DirSource::CudaPath),
        (p("sys"), DirSource::System),
    ];
    assert_eq!(got, want, "duplicates are dropped, the first source wins");
}

#[test]
fn the_first_folder_with_the_right_major_wins() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    touch(&a.join("libcudart.so.12"));
    touch(&a.join("libcudnn_ops.so.9")); // another library, not libcudnn.so.9
    touch(&b.join("libcudart.so.13.0.96"));
    std::os::unix::fs::symlink("libcudart.so.13.0.96", b.join("libcudart.so.13")).unwrap();
    touch(&c.join("libcudart.so.13"));
    let dirs = [dir(&a, DirSource::Env), dir(&b, DirSource::Venv), dir(&c, DirSource::System)];
    let status = resolve(&CUDA_LIBRARIES[CUDART], &dirs);
    let found = status.found.expect("found in b");
    assert_eq!(
        (found.path, found.version.as_str(), found.source),
        (b.join("libcudart.so.13"), "13.0.96", DirSource::Venv)
    );
    assert_eq!(status.other_versions, vec![a.join("libcudart.so.12")]);

    let cudnn = CUDA_LIBRARIES.iter().find(|l| l.stem == "libcudnn.so").unwrap();
    assert!(resolve(cudnn, &dirs).found.is_none(), "libcudnn_ops.so.9 is not libcudnn.so.9");
    touch(&c.join("libcudnn.so.9"));
    assert_eq!(resolve(cudnn, &dirs).found.unwrap().version, "9");
}

fn missing(dirs: &[SearchDir], lib: usize) -> String {
    let status = resolve(&CUDA_LIBRARIES[lib], dirs);
    assert!(status.found.is_none());
    CudaError::MissingLibrary {
        expected: status.library,
        role: status.role,
        other_versions: status.other_versions,
        looked_in: dirs.to_vec(),
    }
    .to_string()
}

#[test]
fn a_wrong_major_or_a_missing_library_is_named_with_where_it_looked() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    touch(&b.join("libcudart.so.12"));
    let dirs = [dir(&a, DirSource::Option), dir(&b, DirSource::CudaHome)];
    let msg = missing(&dirs, CUDART);
    assert!(msg.contains(&format!("expected libcudart.so.13, found libcudart.so.12 in {}", b.display())), "{msg}");

    let msg = missing(&dirs, 5);
    assert!(msg.starts_with("libcudnn.so.9 (cuDNN) not found; looked in: "), "{msg}");
    assert!(msg.contains(&format!("{} (cuda_library_dirs option)", a.display())), "{msg}");
    assert!(msg.contains(&format!("{} (CUDA_HOME)", b.display())) && msg.contains("VIT_CUDA_LIB_DIR"), "{msg}");
}

#[test]
fn each_missing_piece_has_its_own_message() {
    let lib = PathBuf::from("/x/libonnxruntime.so.1.31.1");
    let cpu = CudaError::NotCompiledIn { library: lib.clone() }.to_string();
    assert!(cpu.contains("/x/libonnxruntime.so.1.31.1 was built without the CUDA execution provider"), "{cpu}");
    assert!(cpu.contains("onnxruntime-gpu"), "{cpu}");
    let expected = PathBuf::from("/x/libonnxruntime_providers_cuda.so");
    let provider = CudaError::ProviderMissing { library: lib, expected }.to_string();
    assert!(provider.contains("/x/libonnxruntime_providers_cuda.so is missing"), "{provider}");
    let driver = CudaError::NoDriver { reason: "cannot open".into() }.to_string();
    assert!(driver.starts_with("no NVIDIA driver: libcuda.so.1"), "{driver}");
    let load = CudaError::LoadFailed { path: "/y/libcublas.so.13".into(), reason: "bad ELF".into() }.to_string();
    assert_eq!(load, "/y/libcublas.so.13 could not be loaded: bad ELF");
}

// ---- vit-infer with the GPU build of ONNX Runtime, on a machine without a GPU ----

/// The GPU build's libonnxruntime; its absence is a set-up error, not a skip.
fn gpu_runtime() -> PathBuf {
    let path = std::env::var_os("VIT_ORT_GPU_DYLIB").map(PathBuf::from).expect(
        "VIT_ORT_GPU_DYLIB is not set: run scripts/setup.sh (installs onnxruntime-gpu into $VIT_CACHE/ort-gpu) \
         and `source scripts/env.sh`",
    );
    assert!(path.is_file(), "VIT_ORT_GPU_DYLIB={} does not exist: run scripts/setup.sh", path.display());
    path
}

fn vit_infer(runtime: &Path, envs: &[(&str, &OsStr)], args: &[&dyn AsRef<OsStr>]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vit-infer"))
        .env("ORT_DYLIB_PATH", runtime)
        .envs(envs.iter().copied())
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("run vit-infer");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

fn model_and_image(dir: &Path) -> (PathBuf, PathBuf) {
    let model = write_model(dir, "m.onnx", &small(3), 5);
    let image = dir.join("one.png");
    write_png(&image, 16, 16, 1);
    (model, image)
}

#[test]
fn ep_cuda_without_a_driver_exits_2_and_names_it() {
    let t = tempfile::tempdir().unwrap();
    let (model, image) = model_and_image(t.path());
    let (code, _, stderr) = vit_infer(&gpu_runtime(), &[], &[&"-m", &model, &"--ep", &"cuda", &image]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no NVIDIA driver: libcuda.so.1"), "{stderr}");
    assert!(stderr.contains("cannot open shared object file"), "the loader's own words: {stderr}");
}

#[test]
fn ep_auto_without_a_driver_classifies_on_the_cpu_and_says_why_when_asked() {
    let t = tempfile::tempdir().unwrap();
    let (model, image) = model_and_image(t.path());
    let (code, _, stderr) = vit_infer(&gpu_runtime(), &[], &[&"-m", &model, &"--json", &image]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("execution provider: cpu"), "{stderr}");
    assert!(!stderr.contains("CUDA not used"), "quiet by default on a machine without a GPU: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: the model and its provider: {stderr}");
    let (code, stdout, stderr) = vit_infer(&gpu_runtime(), &[], &[&"-m", &model, &"--json", &"-v", &image]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("CUDA not used: no NVIDIA driver: libcuda.so.1"), "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(line["provider"], "cpu", "{stdout}");
}

#[test]
fn check_gpu_without_a_driver_exits_2_and_lists_it_missing() {
    let runtime = gpu_runtime();
    let (code, stdout, stderr) = vit_infer(&runtime, &[], &[&"--check-gpu"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.contains(&format!("ONNX Runtime: {}", runtime.display())), "{stdout}");
    assert!(stdout.contains("CUDA provider compiled in: yes"), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("libcuda.so.1") && l.contains("MISSING")), "{stdout}");
    assert!(stdout.contains("CUDA: not available: no NVIDIA driver"), "{stdout}");

    let (code, stdout, _) = vit_infer(&runtime, &[], &[&"--check-gpu", &"--json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!((v["ready"].as_bool(), v["cuda_compiled_in"].as_bool()), (Some(false), Some(true)), "{v}");
    assert_eq!(v["driver"]["library"], "libcuda.so.1");
    assert!(v["driver"]["found"].is_null(), "{v}");
    assert_eq!(v["libraries"].as_array().unwrap().len(), CUDA_LIBRARIES.len());
}

#[test]
fn a_runtime_without_its_provider_library_is_named() {
    let t = tempfile::tempdir().unwrap();
    let lonely = t.path().join("libonnxruntime.so.1.31.1");
    std::os::unix::fs::symlink(gpu_runtime(), &lonely).unwrap();
    let (code, stdout, _) = vit_infer(&lonely, &[], &[&"--check-gpu"]);
    assert_eq!(code, 2);
    let expected = t.path().join("libonnxruntime_providers_cuda.so");
    assert!(stdout.contains(&format!("CUDA provider library: {} MISSING", expected.display())), "{stdout}");
    assert!(stdout.contains("has no CUDA provider beside it"), "{stdout}");
}

#[test]
fn the_cpu_build_is_named_as_such() {
    let cpu = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).expect("ORT_DYLIB_PATH (source scripts/env.sh)");
    let (code, stdout, _) = vit_infer(&cpu, &[], &[&"--check-gpu"]);
    assert_eq!(code, 2);
    assert!(stdout.contains("CUDA provider compiled in: no"), "{stdout}");
    assert!(stdout.contains("was built without the CUDA execution provider"), "{stdout}");
}

/// A folder holding an empty shared library with the driver's soname: it gets
/// past the driver check, so the next missing piece shows.
fn stand_in_driver(dir: &Path) -> PathBuf {
    let drv = dir.join("driver");
    std::fs::create_dir_all(&drv).unwrap();
    let cc = Command::new("cc")
        .args(["-shared", "-x", "c", "/dev/null", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(drv.join("libcuda.so.1"))
        .status()
        .expect("a C compiler (cc) to build a stand-in libcuda.so.1");
    assert!(cc.success());
    drv
}

#[test]
fn past_the_driver_a_wrong_major_is_named() {
    let t = tempfile::tempdir().unwrap();
    let (model, image) = model_and_image(t.path());
    let drv = stand_in_driver(t.path());
    let old = t.path().join("cuda12");
    touch(&old.join("libcudart.so.12"));
    let fake_venv = t.path().join("no-venv");
    let dirs = std::env::join_paths([&drv, &old]).unwrap();
    let envs: [(&str, &OsStr); 2] = [("VIT_CUDA_LIB_DIR", dirs.as_os_str()), ("VIT_VENV", fake_venv.as_os_str())];
    let (code, _, stderr) = vit_infer(&gpu_runtime(), &envs, &[&"-m", &model, &"--ep", &"cuda", &image]);
    assert_eq!(code, 2, "{stderr}");
    let want = format!("expected libcudart.so.13, found libcudart.so.12 in {}", old.display());
    assert!(stderr.contains(&want), "{stderr}");
}

/// With every library found and preloaded (the venv's CUDA 13 wheels), the
/// provider library itself loads them by soname; the stand-in driver lacks its
/// symbols, so registration fails with ONNX Runtime's own message.
#[test]
fn past_the_libraries_onnx_runtime_says_why_registration_failed() {
    let t = tempfile::tempdir().unwrap();
    let (model, image) = model_and_image(t.path());
    let drv = stand_in_driver(t.path());
    let envs: [(&str, &OsStr); 1] = [("VIT_CUDA_LIB_DIR", drv.as_os_str())];
    let (code, _, stderr) = vit_infer(&gpu_runtime(), &envs, &[&"-m", &model, &"--ep", &"cuda", &image]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("registering it failed"), "{stderr}");
    assert!(stderr.contains("libonnxruntime_providers_cuda.so") && stderr.contains("undefined symbol"), "{stderr}");
    let (code, stdout, stderr) = vit_infer(&gpu_runtime(), &envs, &[&"-m", &model, &"--json", &"--verbose", &image]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("CUDA not used: registering it failed"), "{stderr}");
    assert!(stdout.contains("\"provider\":\"cpu\""), "{stdout}");
}

/// `scripts/gpu-check.sh --dry` on this machine: everything but CUDA, ending
/// with a complete JSON. It uses the binaries this build made (vit-train and
/// the infer_latency example come from the workspace build).
#[test]
fn gpu_check_dry_run_writes_every_field() {
    gpu_runtime();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vit-infer"));
    let dir = bin.parent().unwrap();
    let (train, latency) = (dir.join("vit-train"), dir.join("examples/infer_latency"));
    for p in [&train, &latency] {
        assert!(
            p.is_file(),
            "{} missing: build it with `cargo build -p vit-train --bin vit-train --example infer_latency`",
            p.display()
        );
    }
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(root.join("scripts/gpu-check.sh"))
        .arg(out.path())
        .arg("--dry")
        .env("VIT_TRAIN", &train)
        .env("VIT_INFER", &bin)
        .env("INFER_LATENCY", &latency)
        .status()
        .expect("run scripts/gpu-check.sh");
    assert!(status.success(), "gpu-check.sh --dry failed: {status}");
    let text = std::fs::read_to_string(out.path().join("gpu-check.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let fields = [
        "/check_gpu/ready",
        "/check_gpu/problem",
        "/train/device",
        "/train/val_accuracy",
        "/train/train_images_per_sec",
        "/eval/cuda_provider/accuracy",
        "/eval/cpu_provider/accuracy",
        "/eval/accuracy_difference",
        "/eval/images_compared",
        "/eval/max_abs_probability_difference",
    ];
    for f in fields {
        assert!(v.pointer(f).is_some_and(|x| !x.is_null()), "{f} missing in {text}");
    }
    for engine in ["ort_cuda", "ort_cpu", "torch_eager"] {
        for f in ["p50_ms", "p99_ms", "images_per_sec"] {
            let x = v.pointer(&format!("/latency/{engine}/{f}")).and_then(|x| x.as_f64());
            assert!(x.is_some_and(|x| x > 0.0), "/latency/{engine}/{f} in {text}");
        }
    }
    assert_eq!(v["check_gpu"]["ready"], false, "no GPU here: {text}");
    assert_eq!(v["eval"]["accuracy_difference"], 0.0, "the CPU provider twice: {text}");
}
