//! The one logger of our command-line programs (feature `cli-log`): library
//! code reports through the `log` facade, and `vit-train` / `vit-infer`
//! install this logger, which writes each record to stderr as a plain line
//! (`warning: ...` and `error: ...` for those levels), so messages read the same
//! whether a library or a binary emitted them. `RUST_LOG` still filters (e.g.
//! `RUST_LOG=warn` silences progress lines; the default is `info`).

use std::io::Write;

/// Installs the stderr logger (`info` and above unless `RUST_LOG` says
/// otherwise). Calling it twice is harmless: the second call does nothing.
pub fn init() {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.format(|buf, record| match record.level() {
        log::Level::Error => writeln!(buf, "error: {}", record.args()),
        log::Level::Warn => writeln!(buf, "warning: {}", record.args()),
        _ => writeln!(buf, "{}", record.args()),
    });
    let _ = builder.try_init();
}
