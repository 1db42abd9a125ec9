//! Which parameters of a network fine-tuning trains, and at what learning-rate
//! scale (`fit --freeze-backbone`, `--layer-decay`), by timm's parameter names.
//! The options are saved in `run.json`, so they live below both the trainer
//! and the run folder.

/// Fine-tuning options of `fit` (`--freeze-backbone`, `--layer-decay`),
/// saved in `run.json` so `--resume` continues with the same parameter groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finetune {
    /// Only the head trains: `head.*`, and `fc_norm.*` with avg pooling (timm's
    /// linear probe, where `fc_norm` belongs to `forward_head`); `norm` and
    /// everything before it stays as initialised.
    #[serde(default)]
    pub freeze_backbone: bool,
    /// timm's layer-wise lr decay: tensor lr scaled by `decay^(depth + 1 - layer_id)`
    /// (see [`layer_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
}

impl Finetune {
    /// True when neither option is set.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }

    /// Why these options cannot train a model of `cfg`, if they cannot.
    pub fn check(&self, cfg: &vit::ViTConfig) -> Result<(), String> {
        if !self.is_none() && cfg.variant != vit::Variant::Standard {
            return Err(format!(
                "--freeze-backbone and --layer-decay need the standard variant (timm names), not {:?}",
                cfg.variant
            ));
        }
        match self.layer_decay {
            Some(d) if !(d > 0.0 && d <= 1.0) => Err(format!("--layer-decay {d}: must be in (0, 1]")),
            _ => Ok(()),
        }
    }

    /// The learning-rate scale of tensor `name` in a model of `depth` blocks.
    pub fn lr_scale(&self, name: &str, depth: usize) -> f64 {
        self.layer_decay.map_or(1.0, |d| d.powi((depth + 1 - layer_id(name, depth)) as i32))
    }
}

/// timm's layer id for layer-wise lr decay: 0 for the embedding (`cls_token`,
/// `pos_embed`, `patch_embed.*` with its conv stem), `i + 1` for `blocks.i.*`,
/// `depth + 1` for everything after the blocks (`norm`, `fc_norm`, `head`, and
/// `norm_pre`, which timm's matcher puts with `norm`).
pub fn layer_id(name: &str, depth: usize) -> usize {
    if name == "cls_token" || name == "pos_embed" || name.starts_with("patch_embed.") {
        return 0;
    }
    let block = name.strip_prefix("blocks.").and_then(|rest| rest.split('.').next()?.parse::<usize>().ok());
    block.map_or(depth + 1, |i| i + 1)
}

/// True for the tensors `--freeze-backbone` keeps training: the head and `fc_norm`.
pub fn is_head(name: &str) -> bool {
    name.starts_with("head.") || name.starts_with("fc_norm.")
}
