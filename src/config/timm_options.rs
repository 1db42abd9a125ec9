//! Validation of the timm `VisionTransformer` options that only the standard
//! variant has (LayerScale, `norm_pre`, no class token), kept apart from the
//! core checks so each stays short.

use super::{invalid, ConfigError, Pooling, Variant, ViTConfig};

/// serde's `skip_serializing_if` for flags off by default: a config without
/// them serialises to the same bytes as before they existed.
pub(super) fn is_false(b: &bool) -> bool {
    !*b
}

/// serde's `skip_serializing_if` for flags on by default.
pub(super) fn is_true(b: &bool) -> bool {
    *b
}

impl ViTConfig {
    /// `layer_scale`, `norm_pre` and `class_token`: standard variant only, a
    /// finite LayerScale, and avg pooling without a class token.
    pub(super) fn validate_timm_options(&self) -> Result<(), ConfigError> {
        if let Some(v) = self.layer_scale {
            if !v.is_finite() {
                return Err(invalid("layer_scale", v, "must be a finite number (not NaN or infinity)"));
            }
        }
        if self.variant == Variant::Dlstudio {
            let only_standard = "the dlstudio variant has ViTHelper's blocks and embedding only";
            if let Some(v) = self.layer_scale {
                return Err(invalid("layer_scale", v, only_standard));
            }
            if self.norm_pre {
                return Err(invalid("norm_pre", true, only_standard));
            }
            if !self.class_token {
                return Err(invalid("class_token", false, only_standard));
            }
        }
        if !self.class_token && self.pooling != Pooling::Avg {
            let value = format!("{:?}", self.pooling).to_lowercase();
            return Err(invalid(
                "pooling",
                value,
                "without a class token (class_token = false) pooling must be \"avg\", as timm's",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serialise_as_before() {
        let json = ViTConfig::default().to_json();
        for key in ["layer_scale", "norm_pre", "class_token"] {
            assert!(!json.contains(key), "{key} in {json}");
        }
        let cfg = ViTConfig { layer_scale: Some(1e-5), norm_pre: true, class_token: false, ..Default::default() };
        let back: ViTConfig = serde_json::from_str(&cfg.to_json()).unwrap();
        assert_eq!(back, cfg);
        let toml_back: ViTConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(toml_back, cfg);
    }

    #[test]
    fn no_class_token_needs_avg_pooling() {
        let cfg = ViTConfig { class_token: false, num_classes: 3, ..Default::default() };
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains("`pooling`") && msg.contains("class_token = false"), "{msg}");
        let ok = ViTConfig { pooling: Pooling::Avg, ..cfg };
        assert_eq!(ok.num_tokens(), ok.num_patches());
        ok.validate().unwrap();
    }

    #[test]
    fn dlstudio_refuses_timm_options() {
        let base =
            ViTConfig { variant: Variant::Dlstudio, pooling: Pooling::Mean, num_classes: 3, ..Default::default() };
        base.validate().unwrap();
        let ls = ViTConfig { layer_scale: Some(0.1), ..base.clone() };
        assert!(ls.validate().unwrap_err().to_string().contains("`layer_scale`"));
        let pre = ViTConfig { norm_pre: true, ..base };
        assert!(pre.validate().unwrap_err().to_string().contains("`norm_pre`"));
        let nan = ViTConfig { layer_scale: Some(f64::NAN), num_classes: 3, ..Default::default() };
        assert!(nan.validate().unwrap_err().to_string().contains("`layer_scale`"));
    }
}
