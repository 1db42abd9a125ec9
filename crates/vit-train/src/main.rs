use clap::Parser;

fn main() -> anyhow::Result<()> {
    vit::cli_log::init();
    vit_train::cli::run(vit_train::cli::Cli::parse())
}
