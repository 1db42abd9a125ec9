//! Getting ONNX Runtime's CUDA provider to start. `libonnxruntime_providers_cuda.so`
//! needs the NVIDIA driver (`libcuda.so.1`) and the CUDA 13 / cuDNN 9 libraries,
//! but pip puts those in `site-packages/nvidia/*/lib`, where the system loader
//! never looks (torch finds its own through an rpath; Python's onnxruntime
//! preloads them). So before the provider is registered, each library is
//! looked for in a fixed order of folders ([`CudaSearch::dirs`]), its major
//! version is checked from its file name ([`resolve`]) and it is loaded by
//! full path; the provider's own loader then reuses the loaded copies by
//! soname. When a piece is missing, [`CudaError`] names it, and
//! [`check_cuda`] reports every piece at once (`vit-infer --check-gpu`).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use ort::ep::{ExecutionProvider as _, CUDA};
use ort::session::Session;

use super::runtime::{environment, runtime_path};
use super::InferError;

/// Environment variable with extra folders (colon-separated) searched first for the CUDA libraries.
pub const CUDA_LIB_DIR_ENV: &str = "VIT_CUDA_LIB_DIR";

/// The CUDA provider's library file beside `libonnxruntime`.
pub const CUDA_PROVIDER_LIBRARY: &str = "libonnxruntime_providers_cuda.so";

/// A shared library known by its soname, `{stem}.{major}` (`libcudart.so.13`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaLibrary {
    /// The file name without a version (`libcudart.so`).
    pub stem: &'static str,
    /// The major version the provider was built against.
    pub major: u32,
    /// What it is, in words.
    pub role: &'static str,
}

impl CudaLibrary {
    /// The soname the provider asks for (`libcudart.so.13`).
    pub fn soname(&self) -> String {
        format!("{}.{}", self.stem, self.major)
    }
}

/// The driver's library, installed with the NVIDIA driver (never from pip).
pub const CUDA_DRIVER: CudaLibrary = CudaLibrary { stem: "libcuda.so", major: 1, role: "NVIDIA driver" };

/// What onnxruntime-gpu 1.31.1 (built for CUDA 13) needs, in load order
/// (cuBLASLt before cuBLAS, which links it). The provider links cudart,
/// cuBLAS, cuBLASLt and cuRAND; it opens cuDNN and cuFFT at run time.
pub const CUDA_LIBRARIES: [CudaLibrary; 6] = [
    CudaLibrary { stem: "libcudart.so", major: 13, role: "CUDA runtime" },
    CudaLibrary { stem: "libcublasLt.so", major: 13, role: "cuBLASLt" },
    CudaLibrary { stem: "libcublas.so", major: 13, role: "cuBLAS" },
    CudaLibrary { stem: "libcurand.so", major: 10, role: "cuRAND" },
    CudaLibrary { stem: "libcufft.so", major: 12, role: "cuFFT" },
    CudaLibrary { stem: "libcudnn.so", major: 9, role: "cuDNN" },
];

/// Where a search folder comes from, in the order they are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirSource {
    /// [`ClassifierOptions::cuda_library_dirs`](super::ClassifierOptions::cuda_library_dirs).
    Option,
    /// [`CUDA_LIB_DIR_ENV`].
    Env,
    /// A Python environment's `site-packages/nvidia/*/lib`.
    Venv,
    /// `$CUDA_HOME/lib64`, `$CUDA_HOME/lib`.
    CudaHome,
    /// `$CUDA_PATH/lib64`, `$CUDA_PATH/lib`.
    CudaPath,
    /// `LD_LIBRARY_PATH`, `/etc/ld.so.conf` and the loader's default folders.
    System,
}

impl fmt::Display for DirSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Option => "cuda_library_dirs option",
            Self::Env => CUDA_LIB_DIR_ENV,
            Self::Venv => "Python venv",
            Self::CudaHome => "CUDA_HOME",
            Self::CudaPath => "CUDA_PATH",
            Self::System => "system loader path",
        })
    }
}

/// One folder searched for the CUDA libraries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SearchDir {
    /// The folder.
    pub path: PathBuf,
    /// Why it is searched.
    pub source: DirSource,
}

/// What the search order is computed from; [`CudaSearch::from_env`] reads it
/// from this process, tests fill it in by hand.
#[derive(Debug, Clone, Default)]
pub struct CudaSearch {
    /// Folders given by the caller.
    pub option_dirs: Vec<PathBuf>,
    /// The value of [`CUDA_LIB_DIR_ENV`] (colon-separated folders).
    pub env_dirs: Option<OsString>,
    /// The toolchain venv (`VIT_VENV`).
    pub venv: Option<PathBuf>,
    /// The ONNX Runtime library in use: when it lives in
    /// `X/onnxruntime/capi/`, `X/nvidia/*/lib` is searched too (a venv's
    /// site-packages, or a `pip install --target` folder).
    pub runtime_library: Option<PathBuf>,
    /// `CUDA_HOME`.
    pub cuda_home: Option<PathBuf>,
    /// `CUDA_PATH`.
    pub cuda_path: Option<PathBuf>,
    /// The system loader's folders, in its order.
    pub system_dirs: Vec<PathBuf>,
}

impl CudaSearch {
    /// The search inputs of this process: `option_dirs`, the environment
    /// variables, the loaded ONNX Runtime library and the system loader's folders.
    pub fn from_env(option_dirs: &[PathBuf]) -> Self {
        let path_var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self {
            option_dirs: option_dirs.to_vec(),
            env_dirs: std::env::var_os(CUDA_LIB_DIR_ENV),
            venv: path_var("VIT_VENV"),
            runtime_library: runtime_path().map(Path::to_path_buf),
            cuda_home: path_var("CUDA_HOME"),
            cuda_path: path_var("CUDA_PATH"),
            system_dirs: system_loader_dirs(),
        }
    }

    /// The folders to search, in order, without duplicates: the options, then
    /// [`CUDA_LIB_DIR_ENV`], the venv's and the ONNX Runtime location's
    /// `nvidia/*/lib`, `CUDA_HOME`, `CUDA_PATH`, and the system loader's folders.
    /// Folders that do not exist are kept (a report shows where it looked).
    pub fn dirs(&self) -> Vec<SearchDir> {
        let mut out: Vec<SearchDir> = Vec::new();
        let mut push = |path: PathBuf, source| {
            if !path.as_os_str().is_empty() && !out.iter().any(|d| d.path == path) {
                out.push(SearchDir { path, source });
            }
        };
        self.option_dirs.iter().for_each(|d| push(d.clone(), DirSource::Option));
        for d in self.env_dirs.iter().flat_map(std::env::split_paths) {
            push(d, DirSource::Env);
        }
        let venv_site = self.venv.iter().flat_map(|v| site_packages(v));
        let runtime_root = self.runtime_library.as_deref().and_then(package_root);
        for root in venv_site.chain(runtime_root) {
            nvidia_lib_dirs(&root).into_iter().for_each(|d| push(d, DirSource::Venv));
        }
        for (home, source) in [(&self.cuda_home, DirSource::CudaHome), (&self.cuda_path, DirSource::CudaPath)] {
            for sub in ["lib64", "lib"] {
                home.iter().for_each(|h| push(h.join(sub), source));
            }
        }
        self.system_dirs.iter().for_each(|d| push(d.clone(), DirSource::System));
        out
    }
}

/// `VENV/lib/python3.*/site-packages`.
fn site_packages(venv: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = read_names(&venv.join("lib"))
        .filter(|n| n.starts_with("python3"))
        .map(|n| venv.join("lib").join(n).join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

/// `X` for a library in `X/onnxruntime/capi/`.
fn package_root(library: &Path) -> Option<PathBuf> {
    let capi = library.parent()?;
    let package = capi.parent()?;
    (capi.file_name()? == "capi" && package.file_name()? == "onnxruntime")
        .then(|| package.parent().map(Path::to_path_buf))?
}

/// `ROOT/nvidia/*/lib`, sorted.
fn nvidia_lib_dirs(root: &Path) -> Vec<PathBuf> {
    let nvidia = root.join("nvidia");
    let mut dirs: Vec<PathBuf> =
        read_names(&nvidia).map(|n| nvidia.join(n).join("lib")).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

/// The file names in `dir` (none when it cannot be read).
fn read_names(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok())
}

/// `LD_LIBRARY_PATH`, the folders of `/etc/ld.so.conf` (and its includes),
/// then the loader's built-in folders.
fn system_loader_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH").iter().flat_map(std::env::split_paths).collect();
    ld_so_conf(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
    let arch = format!("{}-linux-gnu", std::env::consts::ARCH);
    for d in ["/lib", "/usr/lib"] {
        dirs.push(Path::new(d).join(&arch));
    }
    dirs.extend(["/lib64", "/usr/lib64", "/lib", "/usr/lib"].map(PathBuf::from));
    dirs
}

fn ld_so_conf(file: &Path, dirs: &mut Vec<PathBuf>, depth: usize) {
    let Ok(text) = std::fs::read_to_string(file) else { return };
    for line in text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()) {
        match line.strip_prefix("include").map(str::trim) {
            // Includes are globs of the form DIR/*.conf in practice.
            Some(pattern) if depth < 4 => {
                let dir = Path::new(pattern).parent().unwrap_or(Path::new("/etc"));
                let mut confs: Vec<String> = read_names(dir).filter(|n| n.ends_with(".conf")).collect();
                confs.sort();
                confs.iter().for_each(|c| ld_so_conf(&dir.join(c), dirs, depth + 1));
            }
            Some(_) => {}
            None => dirs.push(PathBuf::from(line)),
        }
    }
}

/// A library file found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundLibrary {
    /// The file (the soname's path; a bare soname when only the system loader found it).
    pub path: PathBuf,
    /// Its version from the file name (`13.0.96`, following a symlink; else the major).
    pub version: String,
    /// Where it was found.
    pub source: DirSource,
}

/// The result of looking for one library.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LibraryStatus {
    /// The soname looked for (`libcudart.so.13`).
    pub library: String,
    /// What it is, in words.
    pub role: &'static str,
    /// The file found, if any.
    pub found: Option<FoundLibrary>,
    /// Files of the same library with another major version, seen before it was found.
    pub other_versions: Vec<PathBuf>,
}

/// Looks for `lib` in `dirs`, in order: the first folder holding
/// `{stem}.{major}` (or `{stem}.{major}.*`) wins; other majors are recorded.
pub fn resolve(lib: &CudaLibrary, dirs: &[SearchDir]) -> LibraryStatus {
    let soname = lib.soname();
    let prefix = format!("{}.", lib.stem);
    let mut status = LibraryStatus { library: soname.clone(), role: lib.role, found: None, other_versions: Vec::new() };
    for dir in dirs {
        let mut names: Vec<String> = read_names(&dir.path).filter(|n| n.starts_with(&prefix)).collect();
        names.sort();
        let major_of = |n: &str| n[prefix.len()..].split('.').next().and_then(|m| m.parse::<u32>().ok());
        let (right, wrong): (Vec<&String>, Vec<&String>) =
            names.iter().filter(|n| major_of(n).is_some()).partition(|n| major_of(n) == Some(lib.major));
        status.other_versions.extend(wrong.iter().map(|n| dir.path.join(n)));
        // The soname itself when present (what the provider asks for), else the fullest version.
        let Some(name) = right.iter().find(|n| **n == &soname).or(right.last()) else { continue };
        let path = dir.path.join(name.as_str());
        // A soname is usually a symlink to the fully versioned file (libcudart.so.13.0.96).
        let real = std::fs::canonicalize(&path).ok().and_then(|p| p.file_name()?.to_str().map(String::from));
        let version = [real.as_deref(), right.last().map(|n| n.as_str())]
            .into_iter()
            .flatten()
            .find(|n| n.starts_with(&prefix) && major_of(n) == Some(lib.major))
            .map_or_else(|| lib.major.to_string(), |n| n[prefix.len()..].to_string());
        status.found = Some(FoundLibrary { path, version, source: dir.source });
        break;
    }
    status
}

/// Why the CUDA execution provider cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// The loaded ONNX Runtime library has no CUDA provider (a CPU build).
    #[error("the ONNX Runtime library {} was built without the CUDA execution provider (install onnxruntime-gpu 1.31.1 and use its libonnxruntime)", library.display())]
    NotCompiledIn {
        /// The library loaded.
        library: PathBuf,
    },
    /// A CUDA build of ONNX Runtime whose provider library is not beside it.
    #[error("the ONNX Runtime library {} has no CUDA provider beside it: {} is missing (copy it from the onnxruntime-gpu wheel's onnxruntime/capi/)", library.display(), expected.display())]
    ProviderMissing {
        /// The library loaded.
        library: PathBuf,
        /// The provider library expected.
        expected: PathBuf,
    },
    /// `libcuda.so.1` cannot be loaded: no NVIDIA driver on this machine.
    #[error("no NVIDIA driver: {} (the {}) cannot be loaded: {reason}", CUDA_DRIVER.soname(), CUDA_DRIVER.role)]
    NoDriver {
        /// What the loader said.
        reason: String,
    },
    /// A CUDA library is missing, or only other major versions of it exist.
    #[error("{}", missing_message(.expected, .role, .other_versions, .looked_in))]
    MissingLibrary {
        /// The soname expected (`libcudart.so.13`).
        expected: String,
        /// What it is, in words.
        role: &'static str,
        /// Files of other major versions found.
        other_versions: Vec<PathBuf>,
        /// The folders searched.
        looked_in: Vec<SearchDir>,
    },
    /// A library was found but could not be loaded.
    #[error("{} could not be loaded: {reason}", path.display())]
    LoadFailed {
        /// The file.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// ONNX Runtime refused to register the provider.
    #[error("registering it failed: {0}")]
    Register(#[source] ort::Error),
    /// A session with CUDA could not be created although the CPU loads the model.
    #[error("creating a CUDA session failed: {0}")]
    Session(#[source] ort::Error),
}

fn missing_message(expected: &str, role: &str, other: &[PathBuf], looked_in: &[SearchDir]) -> String {
    if let Some(first) = other.first() {
        let name = first.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let dir = first.parent().unwrap_or(Path::new("")).display();
        return format!(
            "wrong {role} version: expected {expected}, found {name} in {dir} (install the CUDA 13 libraries, e.g. scripts/setup.sh --gpu, or set {CUDA_LIB_DIR_ENV})"
        );
    }
    let dirs: Vec<String> = looked_in.iter().map(|d| format!("{} ({})", d.path.display(), d.source)).collect();
    format!(
        "{expected} ({role}) not found; looked in: {} and the system loader (install it, e.g. scripts/setup.sh --gpu, or set {CUDA_LIB_DIR_ENV} to its folder)",
        dirs.join(", ")
    )
}

/// What the CUDA provider needs, as found in this process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CudaCheck {
    /// The ONNX Runtime library loaded.
    pub runtime_library: Option<PathBuf>,
    /// Why it could not be loaded.
    pub runtime_error: Option<String>,
    /// Whether that library lists the CUDA provider.
    pub cuda_compiled_in: bool,
    /// The provider library expected beside it.
    pub provider_library: Option<PathBuf>,
    /// Whether that file exists.
    pub provider_library_found: bool,
    /// The folders searched, in order.
    pub search_dirs: Vec<SearchDir>,
    /// The driver's library.
    pub driver: LibraryStatus,
    /// The CUDA libraries.
    pub libraries: Vec<LibraryStatus>,
    /// Whether registering the provider succeeded (tried only when nothing is missing).
    pub registered: bool,
    /// The first thing that stops CUDA, in words; `None` when CUDA would start.
    pub problem: Option<String>,
}

impl CudaCheck {
    /// Whether a CUDA session would start.
    pub fn ready(&self) -> bool {
        self.problem.is_none()
    }
}

/// Checks every piece the CUDA provider needs and, when all are there, loads
/// them and registers the provider once, without a model.
pub fn check_cuda(option_dirs: &[PathBuf]) -> CudaCheck {
    let mut check = survey(option_dirs);
    if let (None, Ok(env)) = (&check.problem, environment()) {
        check.problem = first_problem(&check).and_then(|()| register_without_model(env)).err().map(|e| e.to_string());
        check.registered = check.problem.is_none();
    }
    check
}

/// Loads what the CUDA provider needs, or says which piece is missing; the
/// outer error is one the CPU would hit too (ONNX Runtime not loadable).
pub(super) fn prepare(option_dirs: &[PathBuf]) -> Result<Result<(), CudaError>, InferError> {
    environment()?;
    Ok(first_problem(&survey(option_dirs)))
}

/// Everything found, nothing loaded but ONNX Runtime (and what only the system
/// loader could find); `problem` is set only when ONNX Runtime cannot load.
fn survey(option_dirs: &[PathBuf]) -> CudaCheck {
    let runtime_error = environment().err().map(|e| e.to_string());
    let search_dirs = CudaSearch::from_env(option_dirs).dirs();
    let provider_library = runtime_path().and_then(Path::parent).map(|d| d.join(CUDA_PROVIDER_LIBRARY));
    CudaCheck {
        runtime_library: runtime_path().map(Path::to_path_buf),
        cuda_compiled_in: runtime_error.is_none() && CUDA::is_available().unwrap_or(false),
        provider_library_found: provider_library.as_deref().is_some_and(Path::is_file),
        provider_library,
        driver: locate(&CUDA_DRIVER, &search_dirs),
        libraries: CUDA_LIBRARIES.iter().map(|l| locate(l, &search_dirs)).collect(),
        search_dirs,
        registered: false,
        problem: runtime_error.clone(),
        runtime_error,
    }
}

/// Looks for `lib` in `dirs`, then asks the system loader for its soname (which
/// also loads it; a library that must be loaded anyway).
fn locate(lib: &CudaLibrary, dirs: &[SearchDir]) -> LibraryStatus {
    let mut status = resolve(lib, dirs);
    if status.found.is_none() && ort::util::preload_dylib(lib.soname()).is_ok() {
        let version = lib.major.to_string();
        status.found = Some(FoundLibrary { path: PathBuf::from(lib.soname()), version, source: DirSource::System });
    }
    status
}

/// The first missing piece, in the order: provider, driver, libraries; when
/// none is missing, loads the driver and the libraries by full path.
fn first_problem(check: &CudaCheck) -> Result<(), CudaError> {
    let library = check.runtime_library.clone().unwrap_or_default();
    if !check.cuda_compiled_in {
        return Err(CudaError::NotCompiledIn { library });
    }
    if !check.provider_library_found {
        let expected = check.provider_library.clone().unwrap_or_else(|| PathBuf::from(CUDA_PROVIDER_LIBRARY));
        return Err(CudaError::ProviderMissing { library, expected });
    }
    let Some(driver) = &check.driver.found else {
        let loader =
            ort::util::preload_dylib(CUDA_DRIVER.soname()).err().map(|e| loader_message(&e)).unwrap_or_default();
        let reason =
            format!("not in the {} folders searched, and the system loader says: {loader}", check.search_dirs.len());
        return Err(CudaError::NoDriver { reason });
    };
    ort::util::preload_dylib(&driver.path).map_err(|e| CudaError::NoDriver { reason: loader_message(&e) })?;
    for status in &check.libraries {
        let Some(found) = &status.found else {
            return Err(CudaError::MissingLibrary {
                expected: status.library.clone(),
                role: status.role,
                other_versions: status.other_versions.clone(),
                looked_in: check.search_dirs.clone(),
            });
        };
        ort::util::preload_dylib(&found.path)
            .map_err(|e| CudaError::LoadFailed { path: found.path.clone(), reason: loader_message(&e) })?;
        log::debug!("loaded {} from {}", status.library, found.path.display());
    }
    Ok(())
}

/// The loader's message: libloading's own says only "dlopen failed", the
/// system's (`libcuda.so.1: cannot open shared object file`) is its source.
fn loader_message(e: &dyn std::error::Error) -> String {
    e.source().map_or_else(|| e.to_string(), |s| s.to_string())
}

/// Registers the CUDA provider on a session builder, as opening a model would.
fn register_without_model(env: &ort::environment::Environment) -> Result<(), CudaError> {
    let builder = Session::builder(env).map_err(CudaError::Register)?;
    builder
        .with_execution_providers([CUDA::default().build().error_on_failure()])
        .map_err(|e| CudaError::Register(e.into()))?;
    Ok(())
}
