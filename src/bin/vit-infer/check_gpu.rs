//! `vit-infer --check-gpu`: whether the CUDA execution provider would start
//! here, and if not which piece is missing, without a model: the ONNX Runtime
//! library in use, its CUDA provider, the driver and every CUDA library with
//! its path, version and where it was found (from [`vit::infer::check_cuda`]).

use std::io::{self, Write};

use vit::infer::{check_cuda, CudaCheck, LibraryStatus};

/// Prints the report (text, or one JSON object) on stdout; true when CUDA would start.
pub fn run(json: bool) -> bool {
    let check = check_cuda(&[]);
    let mut out = io::stdout().lock();
    // A closed stdout does not change the verdict, which the exit status carries.
    let _ = if json { write_json(&mut out, &check) } else { write_text(&mut out, &check) };
    let _ = out.flush();
    check.ready()
}

fn write_json(out: &mut impl Write, check: &CudaCheck) -> io::Result<()> {
    let mut value = serde_json::to_value(check).map_err(io::Error::other)?;
    value["ready"] = check.ready().into();
    writeln!(out, "{value}")
}

fn write_text(out: &mut impl Write, check: &CudaCheck) -> io::Result<()> {
    match (&check.runtime_library, &check.runtime_error) {
        (_, Some(e)) => writeln!(out, "ONNX Runtime: not loaded: {e}")?,
        (Some(lib), None) => writeln!(out, "ONNX Runtime: {}", lib.display())?,
        (None, None) => writeln!(out, "ONNX Runtime: unknown library")?,
    }
    let compiled = if check.cuda_compiled_in { "yes" } else { "no (a CPU build)" };
    writeln!(out, "CUDA provider compiled in: {compiled}")?;
    if let Some(p) = &check.provider_library {
        let found = if check.provider_library_found { "found" } else { "MISSING" };
        writeln!(out, "CUDA provider library: {} {found}", p.display())?;
    }
    let width = check.libraries.iter().chain([&check.driver]).map(|l| l.library.len()).max().unwrap_or(0);
    writeln!(out, "driver:")?;
    write_library(out, &check.driver, width)?;
    writeln!(out, "CUDA libraries:")?;
    for lib in &check.libraries {
        write_library(out, lib, width)?;
    }
    writeln!(out, "searched, in order:")?;
    for d in &check.search_dirs {
        let missing = if d.path.is_dir() { "" } else { " (absent)" };
        writeln!(out, "  {} ({}){missing}", d.path.display(), d.source)?;
    }
    match &check.problem {
        None => writeln!(out, "CUDA: ready (libraries loaded, provider registered)"),
        Some(p) => writeln!(out, "CUDA: not available: {p}"),
    }
}

fn write_library(out: &mut impl Write, lib: &LibraryStatus, width: usize) -> io::Result<()> {
    match &lib.found {
        Some(f) => writeln!(
            out,
            "  {:<width$}  found    {:<10} {} ({}, {})",
            lib.library,
            f.version,
            f.path.display(),
            lib.role,
            f.source
        ),
        None => {
            let others: Vec<String> = lib.other_versions.iter().map(|p| p.display().to_string()).collect();
            let others =
                if others.is_empty() { String::new() } else { format!("; other versions: {}", others.join(", ")) };
            writeln!(out, "  {:<width$}  MISSING  ({}){others}", lib.library, lib.role)
        }
    }
}
