//! The config a run folder saved (`vit-train`'s `RUN/config.toml`), read back
//! strictly. Every key of a [`ViTConfig`] has a default so presets may set only
//! what they change; read that way, an empty or cut-short `config.toml` would
//! silently become the built-in default network. A saved config is written
//! whole, so here an empty file, or one without a key every saved config has
//! always held, is an error naming the file and the fix.

use std::path::Path;

use super::{parse_error, ConfigError, ViTConfig};

/// Top-level keys every saved config holds.
const SAVED_KEYS: &[&str] = &["variant", "image_size", "patch_size", "num_classes", "embed_dim", "depth", "num_heads"];

/// `[train]` keys every saved config holds, from the head and the tail of the
/// table as configs have always had it, so a file cut inside the table is caught too.
const SAVED_TRAIN_KEYS: &[&str] = &["epochs", "batch_size", "lr", "seed"];

impl ViTConfig {
    /// Reads a config saved in a run folder: as [`ViTConfig::from_toml_file`],
    /// but an empty file, or one that lacks a key every saved config holds
    /// (`num_classes`, `[train]`, `train.seed`, ...), is a [`ConfigError::Parse`]
    /// naming the missing key and the fix, never the defaults.
    pub fn from_saved_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::files::read_text(path, "saved config")?;
        let incomplete = |what: String| {
            parse_error(
                path,
                format!(
                    "{what}: a saved config is written whole, so this one was cut short (a kill during a write by \
                     an older vit-train?) or edited; restore it from a copy, or start a new run with another --out"
                ),
            )
        };
        if text.trim().is_empty() {
            return Err(incomplete("the file is empty".into()));
        }
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| parse_error(path, e.to_string()))?;
        let train = table.get("train").and_then(|t| t.as_table());
        let missing = SAVED_KEYS
            .iter()
            .filter(|k| !table.contains_key(**k))
            .map(|k| k.to_string())
            .chain(
                SAVED_TRAIN_KEYS
                    .iter()
                    .filter(|k| !train.is_some_and(|t| t.contains_key(**k)))
                    .map(|k| format!("train.{k}")),
            )
            .collect::<Vec<_>>();
        if !missing.is_empty() {
            return Err(incomplete(format!("it lacks {}", missing.join(", "))));
        }
        Self::from_toml_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_config_reads_back_and_an_empty_or_cut_one_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let cfg = ViTConfig { num_classes: 5, ..Default::default() };
        let text = cfg.to_toml();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(ViTConfig::from_saved_toml_file(&path).unwrap(), cfg);
        std::fs::write(&path, "").unwrap();
        let msg = ViTConfig::from_saved_toml_file(&path).unwrap_err().to_string();
        assert!(msg.contains("config.toml") && msg.contains("empty") && msg.contains("another --out"), "{msg}");
        // Cut at a line end: valid TOML, but [train] is gone or half there.
        for cut in [text.find("[train]").unwrap(), text.find("seed").unwrap()] {
            std::fs::write(&path, &text[..cut]).unwrap();
            let msg = ViTConfig::from_saved_toml_file(&path).unwrap_err().to_string();
            assert!(msg.contains("lacks") && msg.contains("train.seed"), "{msg}");
            // The lenient reader would have taken the defaults.
            assert!(ViTConfig::from_toml_file(&path).is_ok());
        }
    }
}
