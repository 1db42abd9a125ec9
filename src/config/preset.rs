//! Preset files that build on another: a TOML preset may name a `base` preset
//! (a path relative to its own folder) and set only the keys it changes. The
//! base's tables are merged key by key, so `[train] epochs = 40` keeps the rest
//! of the base's `[train]`. Without this, a variant preset is a full copy of
//! its base, and a recipe change has to be made twice by hand.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use super::{ConfigError, ViTConfig};

/// The key that names the preset a file builds on.
const BASE_KEY: &str = "base";

/// Longest chain of `base` presets followed before giving up.
const MAX_DEPTH: usize = 8;

/// Reads `path` as a TOML table, with its `base` chain merged in (the file's
/// own keys win).
pub(super) fn load_table(path: &Path) -> Result<Table, ConfigError> {
    load_chain(path, &mut Vec::new())
}

fn load_chain(path: &Path, seen: &mut Vec<PathBuf>) -> Result<Table, ConfigError> {
    let parse_error = |message: String| super::parse_error(path, message);
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if seen.contains(&key) || seen.len() >= MAX_DEPTH {
        let chain: Vec<String> = seen.iter().map(|p| p.display().to_string()).collect();
        return Err(parse_error(format!(
            "`base` presets form a loop or a chain deeper than {MAX_DEPTH}: {} -> {}",
            chain.join(" -> "),
            path.display()
        )));
    }
    seen.push(key);
    let text = crate::files::read_text(path, "config")?;
    let mut table: Table = toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
    let base = table.remove(BASE_KEY);
    // Every field has a default, so a partial preset parses on its own: an unknown
    // key or a wrong type is reported against the file that holds it, not its child.
    ViTConfig::deserialize(table.clone()).map_err(|e| parse_error(e.to_string()))?;
    let Some(base) = base else {
        return Ok(table);
    };
    let Value::String(base) = base else {
        return Err(parse_error(format!("`{BASE_KEY}` must be a file name string, not {base}")));
    };
    let base_path = path.parent().unwrap_or(Path::new(".")).join(&base);
    let mut merged = load_chain(&base_path, seen)?;
    merge_into(&mut merged, table);
    Ok(merged)
}

/// Overwrites `base` with `over`, merging sub-tables key by key.
fn merge_into(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge_into(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ViTConfig;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_preset_overrides_only_what_it_sets() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", "depth = 3\nembed_dim = 48\nnum_heads = 3\n[train]\nepochs = 7\nlr = 0.01\n");
        let b = write(dir.path(), "b.toml", "base = \"a.toml\"\ndepth = 5\n[train]\nepochs = 9\n");
        let cfg = ViTConfig::from_toml_file(&b).unwrap();
        assert_eq!((cfg.depth, cfg.embed_dim, cfg.num_heads), (5, 48, 3));
        assert_eq!(cfg.train.epochs, 9);
        assert!((cfg.train.lr - 0.01).abs() < 1e-12, "the base's [train] keys stay: {}", cfg.train.lr);
    }

    #[test]
    fn base_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = write(dir.path(), "m.toml", "base = \"nope.toml\"\n");
        let msg = ViTConfig::from_toml_file(&missing).unwrap_err().to_string();
        assert!(msg.contains("nope.toml"), "{msg}");

        write(dir.path(), "x.toml", "base = \"y.toml\"\n");
        let y = write(dir.path(), "y.toml", "base = \"x.toml\"\n");
        let msg = ViTConfig::from_toml_file(&y).unwrap_err().to_string();
        assert!(msg.contains("loop") && msg.contains("y.toml"), "{msg}");

        let bad = write(dir.path(), "n.toml", "base = 3\n");
        let msg = ViTConfig::from_toml_file(&bad).unwrap_err().to_string();
        assert!(msg.contains("`base` must be"), "{msg}");

        // Unknown keys are still rejected, naming the file that holds them.
        let typo = write(dir.path(), "t.toml", "base = \"a.toml\"\nembed_dimm = 3\n");
        write(dir.path(), "a.toml", "depth = 3\n");
        let msg = ViTConfig::from_toml_file(&typo).unwrap_err().to_string();
        assert!(msg.contains("embed_dimm") && msg.contains("t.toml"), "{msg}");
        let child = write(dir.path(), "c.toml", "base = \"d.toml\"\ndepth = 2\n");
        write(dir.path(), "d.toml", "deptth = 3\n");
        let msg = ViTConfig::from_toml_file(&child).unwrap_err().to_string();
        assert!(msg.contains("deptth") && msg.contains("d.toml") && !msg.contains("c.toml"), "{msg}");
    }
}
