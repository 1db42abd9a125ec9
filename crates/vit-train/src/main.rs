use clap::Parser;

fn main() -> anyhow::Result<()> {
    vit_train::cli::run(vit_train::cli::Cli::parse())
}
