//! `vit-infer`: classify images, or evaluate a labelled folder, with a model
//! exported by `vit-train export` (ONNX Runtime). See `vit-infer --help`; the
//! logic lives in `vit::infer::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    vit::cli_log::init();
    let cli = vit::infer::cli::Cli::parse();
    std::process::ExitCode::from(vit::infer::cli::run(&cli))
}
