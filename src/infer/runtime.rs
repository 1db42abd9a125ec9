//! Finding and loading the ONNX Runtime shared library (`ort`'s `load-dynamic`),
//! once per process.
//!
//! Lookup order:
//! 1. `ORT_DYLIB_PATH` in the environment at run time (when set, only it is tried);
//! 2. the `ORT_DYLIB_PATH` recorded when this crate was built (`scripts/env.sh`
//!    sets it to the toolchain venv's `onnxruntime/capi/libonnxruntime.so.*`);
//! 3. `libonnxruntime.so*` (`.dylib`, `.dll`) next to the running executable.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use super::InferError;

/// Where the library was looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCandidate {
    /// The file (or bare library name for the run-time variable).
    pub path: PathBuf,
    /// Where the candidate comes from, in words.
    pub source: &'static str,
}

/// `ORT_DYLIB_PATH` as recorded at build time.
const BUILD_TIME_PATH: Option<&str> = option_env!("ORT_DYLIB_PATH");

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
static LOADED_FROM: OnceLock<PathBuf> = OnceLock::new();

fn is_runtime_file_name(name: &str) -> bool {
    let stem = format!("{}onnxruntime", std::env::consts::DLL_PREFIX);
    let suffix = std::env::consts::DLL_SUFFIX;
    // libonnxruntime.so, libonnxruntime.so.1.31.1, libonnxruntime.1.31.1.dylib, onnxruntime.dll;
    // not libonnxruntime_providers_*.so.
    name.starts_with(&format!("{stem}.")) && name.contains(suffix)
}

/// Library files next to the running executable, best first (the unversioned
/// name, then versions in descending order).
fn beside_executable() -> (Option<PathBuf>, Vec<PathBuf>) {
    let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) else {
        return (None, Vec::new());
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_runtime_file_name))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.reverse();
    let plain = format!("{}onnxruntime{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    found.sort_by_key(|p| p.file_name().and_then(|n| n.to_str()) != Some(plain.as_str()));
    (Some(dir), found)
}

/// The candidates in lookup order (the run-time variable alone when it is set).
pub fn runtime_candidates() -> Vec<RuntimeCandidate> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return vec![RuntimeCandidate { path: PathBuf::from(p), source: "ORT_DYLIB_PATH (environment)" }];
    }
    let mut out = Vec::new();
    if let Some(p) = BUILD_TIME_PATH.filter(|p| !p.is_empty()) {
        out.push(RuntimeCandidate { path: PathBuf::from(p), source: "ORT_DYLIB_PATH recorded at build time" });
    }
    for p in beside_executable().1 {
        out.push(RuntimeCandidate { path: p, source: "next to the executable" });
    }
    out
}

/// The library this process loaded, once a [`Classifier`](super::Classifier) has loaded one.
pub fn runtime_path() -> Option<&'static Path> {
    LOADED_FROM.get().map(PathBuf::as_path)
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub(crate) fn environment() -> Result<&'static Environment, InferError> {
    ENVIRONMENT.get_or_init(init).as_ref().map_err(|e| InferError::Runtime(e.clone()))
}

fn init() -> Result<Environment, String> {
    let explicit = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()).is_some();
    let mut tried: Vec<String> = Vec::new();
    for cand in runtime_candidates() {
        // A bare name in the run-time variable is left to the system's library search.
        let bare = cand.path.parent().map_or(true, |p| p.as_os_str().is_empty());
        if !bare && !cand.path.exists() {
            tried.push(format!("{} {}: file not found", cand.source, cand.path.display()));
            continue;
        }
        match ort::init_from(&cand.path) {
            Ok(builder) => {
                return match builder.with_name("vit").with_telemetry(false).build() {
                    Ok(env) => {
                        let _ = LOADED_FROM.set(cand.path.clone());
                        Ok(env)
                    }
                    Err(e) => Err(format!("ONNX Runtime from {} failed to start: {e}", cand.path.display())),
                };
            }
            Err(e) => tried.push(format!("{} {}: {e}", cand.source, cand.path.display())),
        }
    }
    if !explicit {
        if BUILD_TIME_PATH.map_or(true, str::is_empty) {
            tried.push(
                "ORT_DYLIB_PATH recorded at build time: none (the crate was built without scripts/env.sh)".into(),
            );
        }
        let (dir, found) = beside_executable();
        if found.is_empty() {
            let dir = dir.map(|d| d.display().to_string()).unwrap_or_else(|| "<unknown>".into());
            tried.push(format!(
                "next to the executable {dir}/{}onnxruntime{}*: none",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            ));
        }
        tried.insert(0, "ORT_DYLIB_PATH (environment): not set".into());
    }
    Err(format!(
        "cannot load the ONNX Runtime library (ONNX Runtime >= 1.{} is needed); looked at:\n  - {}\nto fix: run scripts/setup.sh (installs onnxruntime into the toolchain venv) and `source scripts/env.sh`, or set ORT_DYLIB_PATH to a libonnxruntime shared library, or copy one next to the executable",
        ort::MINOR_VERSION,
        tried.join("\n  - ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_file_names() {
        if cfg!(target_os = "linux") {
            assert!(is_runtime_file_name("libonnxruntime.so"));
            assert!(is_runtime_file_name("libonnxruntime.so.1.31.1"));
            assert!(!is_runtime_file_name("libonnxruntime_providers_cuda.so"));
            assert!(!is_runtime_file_name("libonnxruntime.a"));
        }
    }
}
