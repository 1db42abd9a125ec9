//! `vit-serve`: serve exported models over HTTP (Open Inference Protocol
//! REST, a `classify` endpoint for image bytes, Prometheus metrics) with
//! dynamic batching, through `vit::serve`. This file parses the command line,
//! opens the models, binds, prints the address and waits for SIGTERM or
//! SIGINT to drain and exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use vit::infer::{ClassifierOptions, Provider};
use vit::serve::{Repository, ServeOptions};

/// Serving worked and stopped cleanly on SIGTERM/SIGINT.
const EXIT_OK: u8 = 0;
/// The server failed while running (the port was lost, requests did not drain in time).
const EXIT_FAILED: u8 = 1;
/// Usage or model error: bad flags, no model, a model that does not open, an address that cannot be bound.
const EXIT_USAGE: u8 = 2;

const AFTER_HELP: &str = "Examples:\n  \
vit-serve runs/coco5/model.onnx                      # serves model `model` on 127.0.0.1:8000\n  \
vit-serve models_repo/ --port 0                      # every models_repo/<name>/model.onnx; prints the port picked\n  \
vit-serve m.onnx --max-batch 8 --max-delay-us 2000   # dynamic batching: wait up to 2 ms for 8 images\n  \
curl --data-binary @cat.jpg 'http://127.0.0.1:8000/v1/models/model/classify?top_k=3'\n\
Exit status:\n  \
0  stopped on SIGTERM or SIGINT after draining the requests in flight\n  \
1  the server failed while running, or requests were still open after the drain timeout\n  \
2  usage or model error: bad flags, a missing or broken model, an address that cannot be bound";

/// Serve Vision Transformers exported by `vit-train export` over HTTP: KServe v2 /
/// Open Inference Protocol REST (`/v2/models/{name}/infer`), `POST
/// /v1/models/{name}/classify` with image bytes, `GET /metrics`.
#[derive(Debug, Parser)]
#[command(name = "vit-serve", version, after_help = AFTER_HELP)]
struct Cli {
    // The doc comment is clap's help text, printed verbatim: `<name>` is a placeholder, not HTML.
    #[allow(rustdoc::invalid_html_tags)]
    /// A model.onnx file (served under its file stem), or a repository folder: every <name>/model.onnx or <name>/<version>/model.onnx under its folder name.
    #[arg(value_name = "MODEL_OR_REPO")]
    model: PathBuf,
    /// Port to listen on; 0 picks a free one (printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Most images per ONNX Runtime call.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    max_batch: u64,
    /// Longest a batch waits to fill, in microseconds; 0 never waits.
    #[arg(long, default_value_t = 0)]
    max_delay_us: u64,
    /// ONNX Runtime sessions per model, each with its own batcher (default: on the CPU with --threads unset, two sessions sharing the cores, the most throughput under load; one on CUDA or with --threads).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    instances: Option<u64>,
    /// Largest request body (B, KiB, MiB, GiB suffixes); larger bodies get 413.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_body: usize,
    /// Requests queued per model; past it requests get 503 with Retry-After.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    queue: u64,
    /// Per-request deadline in milliseconds (504 past it); none by default.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: Option<u64>,
    /// Longest wait for a client's headers, or between parts of its body, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    read_timeout_ms: u64,
    /// Threads inside each operator per session (default: the cores shared among the sessions; with --instances, ONNX Runtime's one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Execution provider: auto (CUDA when it starts, else CPU), cpu, or cuda (an error when unavailable).
    #[arg(long, value_enum, default_value_t = Ep::Auto)]
    ep: Ep,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Ep {
    /// CUDA when it starts, else CPU.
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA or an error.
    Cuda,
}

/// `16MiB`, `512KiB`, `1000` (bytes).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("`{s}` is not a size: expected e.g. 16MiB, 512KiB or 1000"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{s}`: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).filter(|&n| n > 0).ok_or_else(|| format!("`{s}` is not a positive size that fits"))
}

impl Cli {
    fn options(&self) -> ServeOptions {
        let read = Duration::from_millis(self.read_timeout_ms);
        ServeOptions {
            classifier: ClassifierOptions {
                provider: match self.ep {
                    Ep::Auto => Provider::Auto,
                    Ep::Cpu => Provider::Cpu,
                    Ep::Cuda => Provider::Cuda,
                },
                intra_threads: self.threads,
                ..Default::default()
            },
            max_batch: self.max_batch as usize,
            max_delay: Duration::from_micros(self.max_delay_us),
            instances: self.instances.map(|n| n as usize),
            max_body: self.max_body,
            queue: self.queue as usize,
            timeout: self.timeout_ms.map(Duration::from_millis),
            body_timeout: read,
            header_timeout: read,
            ..Default::default()
        }
    }
}

fn main() -> ExitCode {
    vit::cli_log::init();
    let cli = Cli::parse();
    let repo = match Repository::open(&cli.model, cli.options()) {
        Ok(repo) => repo,
        Err(e) => {
            eprintln!("vit-serve: error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vit-serve: error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = runtime.block_on(async {
        let addr = format!("{}:{}", cli.host, cli.port);
        let listener = match bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("vit-serve: error: {e:#}");
                return EXIT_USAGE;
            }
        };
        let local: SocketAddr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("vit-serve: error: cannot read the bound address of {addr}: {e}");
                return EXIT_FAILED;
            }
        };
        // Scripts read this line to find the port (`--port 0`).
        println!("vit-serve: listening on http://{local} (models: {})", repo.names().join(", "));
        let opts = repo.options();
        let drained =
            vit::serve::serve(listener, repo.router(), opts.header_timeout, opts.drain_timeout, stop_signal()).await;
        repo.close();
        if drained {
            log::info!("stopped");
            EXIT_OK
        } else {
            log::error!("requests were still open after {} s: stopping anyway", opts.drain_timeout.as_secs());
            EXIT_FAILED
        }
    });
    ExitCode::from(code)
}

async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is the port taken? try --port 0)"))
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                log::warn!("cannot watch SIGTERM ({e}): only SIGINT stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => log::info!("SIGINT received"),
        () = terminate => log::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units_and_bad_ones_are_named() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_size("0").is_err());
    }
}
