//! Two jobs, both about linking libtorch:
//!
//! - builds the C++ shim of `csrc/` (ATen operations and c10d, which tch does not bind) against
//!   the same libtorch headers and C++ ABI as torch-sys: `$LIBTORCH/include`, or
//!   with `LIBTORCH_USE_PYTORCH` the venv's torch as python reports it;
//! - links libtorch_cuda even though no symbol of it is referenced directly
//!   (the linker would drop it with --as-needed, and CUDA would then be
//!   "unavailable"), and records an rpath to libtorch so `vit-train` runs
//!   without LD_LIBRARY_PATH. Same fix as tch-rs's own build.rs.

use std::path::PathBuf;
use std::process::Command;

/// The shim's translation units (csrc/README.md lists what each owns).
const SHIM_SOURCES: &[&str] = &["csrc/optim.cpp", "csrc/dist.cpp", "csrc/dist_bn.cpp", "csrc/amp.cpp"];

/// The NCCL process group and CUDA-graph capture, built apart with the CUDA headers when they are there.
const CUDA_SOURCES: &[&str] = &["csrc/dist_nccl.cpp", "csrc/graph.cpp"];

/// Include dirs and `_GLIBCXX_USE_CXX11_ABI` value of the libtorch torch-sys uses.
fn libtorch_headers() -> (Vec<PathBuf>, String) {
    for var in ["LIBTORCH", "LIBTORCH_USE_PYTORCH", "LIBTORCH_INCLUDE", "LIBTORCH_CXX11_ABI", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        // torch-sys's own choice of interpreter.
        let python = if std::env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
        let script = "import torch\nfrom torch.utils import cpp_extension\n\
                      print('ABI', int(torch._C._GLIBCXX_USE_CXX11_ABI))\n\
                      for p in cpp_extension.include_paths(): print('INCLUDE', p)";
        let out = Command::new(python).args(["-c", script]).output().expect("running python for torch's headers");
        assert!(
            out.status.success(),
            "python could not report torch's headers: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (mut dirs, mut abi) = (Vec::new(), "1".to_string());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(p) = line.strip_prefix("INCLUDE ") {
                dirs.push(PathBuf::from(p));
            } else if let Some(a) = line.strip_prefix("ABI ") {
                abi = a.to_string();
            }
        }
        return (dirs, abi);
    }
    let root = std::env::var_os("LIBTORCH_INCLUDE")
        .or_else(|| std::env::var_os("LIBTORCH"))
        .map(PathBuf::from)
        .expect("set LIBTORCH (or LIBTORCH_USE_PYTORCH=1), as for torch-sys");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    (vec![root.join("include"), root.join("include/torch/csrc/api/include")], abi)
}

/// The CUDA runtime (with `crt/`), CCCL and NCCL include dirs of the nvidia-* PyPI
/// packages beside the venv's torch, when all are there (ProcessGroupNCCL needs them).
fn nccl_headers(torch_includes: &[PathBuf]) -> Option<Vec<PathBuf>> {
    // .../site-packages/torch/include -> .../site-packages/nvidia
    let nvidia = torch_includes.first()?.parent()?.parent()?.join("nvidia");
    let cuda =
        ["cu13", "cu12"].iter().map(|v| nvidia.join(v).join("include")).find(|d| d.join("cuda_runtime.h").exists())?;
    let nccl = nvidia.join("nccl/include");
    let found =
        cuda.join("crt/host_config.h").exists() && cuda.join("nv/target").exists() && nccl.join("nccl.h").exists();
    found.then(|| vec![cuda, nccl])
}

fn shim_build(includes: &[PathBuf], abi: &str) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .includes(includes)
        .include("csrc")
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // c10d's Gloo process group (the Gloo headers come from Debian's libgloo-dev).
        .flag("-DUSE_DISTRIBUTED")
        .flag("-DUSE_C10D_GLOO");
    // The shim only forwards to ATen and c10d, and its files are heavy on
    // libtorch headers: in dev builds compile it unoptimised and without debug
    // info (a faster first build, no measurable cost per step); release keeps
    // the profile's flags.
    if std::env::var("PROFILE").as_deref() == Ok("debug") {
        build.opt_level(0).debug(false);
    }
    build
}

fn build_shim() {
    println!("cargo:rerun-if-changed=csrc");
    let (includes, abi) = libtorch_headers();
    shim_build(&includes, &abi).files(SHIM_SOURCES).compile("vit_shim");
    // NCCL and CUDA graphs in their own archive: only they need the CUDA headers (and compile to stubs without them).
    let mut nccl = shim_build(&includes, &abi);
    match nccl_headers(&includes) {
        Some(dirs) => {
            nccl.includes(dirs)
                .flag("-DVIT_HAVE_NCCL")
                .flag("-DVIT_HAVE_CUDA_GRAPH")
                .flag("-DUSE_C10D_NCCL")
                .flag("-DUSE_CUDA");
        }
        None => println!("cargo:warning=CUDA/NCCL headers not found beside torch: building without NCCL and CUDA graphs (scripts/setup.sh installs them)"),
    }
    nccl.files(CUDA_SOURCES).compile("vit_shim_nccl");
}

fn main() {
    build_shim();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        return;
    }
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else { return };
    let lib = PathBuf::from(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    // The CUDA-graph shim (csrc/graph.cpp) calls c10_cuda's streams directly.
    if lib.join("libc10_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-lc10_cuda");
    }
}
