//! Unit tests of `ViTConfig`: parsing, validation messages and derived sizes.

use super::*;

#[test]
fn default_is_valid_once_classes_are_known() {
    let mut cfg = ViTConfig::default();
    assert!(cfg.validate().is_err(), "num_classes 0 must be rejected by validate()");
    cfg.num_classes = 10;
    cfg.validate().unwrap();
}

#[test]
fn rejects_patch_not_dividing_image() {
    let cfg = ViTConfig { image_size: 30, patch_size: 4, num_classes: 3, ..Default::default() };
    let msg = cfg.validate().unwrap_err().to_string();
    assert!(msg.contains("patch_size") && msg.contains("30"), "{msg}");
}

#[test]
fn rejects_heads_not_dividing_embed() {
    let cfg = ViTConfig { embed_dim: 64, num_heads: 3, num_classes: 3, ..Default::default() };
    let msg = cfg.validate().unwrap_err().to_string();
    assert!(msg.contains("num_heads") && msg.contains("64"), "{msg}");
}

#[test]
fn conv_stem_must_match_patch_size() {
    let cfg = ViTConfig {
        stem: Stem::Conv,
        stem_channels: vec![16, 32],
        patch_size: 8,
        num_classes: 3,
        ..Default::default()
    };
    let msg = cfg.validate().unwrap_err().to_string();
    assert!(msg.contains("patch_size") && msg.contains("makes patch_size 4"), "{msg}");
    let ok = ViTConfig { patch_size: 4, ..cfg.clone() };
    ok.validate().unwrap();
    let empty = ViTConfig { stem_channels: vec![], ..ok.clone() };
    assert!(empty.validate().unwrap_err().to_string().contains("stem_channels"));
    let stray = ViTConfig { stem: Stem::Patch, ..ok.clone() };
    assert!(stray.validate().unwrap_err().to_string().contains("stem_channels"));
}

#[test]
fn stem_strides_set_the_grid() {
    let base = ViTConfig {
        stem: Stem::Conv,
        stem_channels: vec![8, 8, 16],
        patch_size: 4,
        num_classes: 3,
        ..Default::default()
    };
    let cfg = ViTConfig { stem_strides: vec![2, 1, 2], ..base.clone() };
    cfg.validate().unwrap();
    assert_eq!(cfg.stem_layers(), vec![(8, 2), (8, 1), (16, 2)]);
    assert_eq!(
        ViTConfig { patch_size: 8, ..base.clone() }.stem_layers(),
        vec![(8, 2), (8, 2), (16, 2)],
        "empty = all 2"
    );
    for bad in [vec![2, 1], vec![2, 3, 2], vec![2, 0, 2]] {
        let msg = ViTConfig { stem_strides: bad.clone(), ..base.clone() }.validate().unwrap_err().to_string();
        assert!(msg.contains("stem_strides") && msg.contains("1 or 2"), "{bad:?}: {msg}");
    }
    let grid = ViTConfig { stem_strides: vec![1, 1, 2], ..base.clone() }.validate().unwrap_err().to_string();
    assert!(grid.contains("makes patch_size 2"), "{grid}");
    let stray = ViTConfig { stem: Stem::Patch, stem_channels: vec![], stem_strides: vec![2], ..base };
    assert!(stray.validate().unwrap_err().to_string().contains("stem_strides"));
}

#[test]
fn locality_attention_is_standard_only() {
    let cfg = ViTConfig { locality_attention: true, num_classes: 3, ..Default::default() };
    cfg.validate().unwrap();
    let dl = ViTConfig { variant: Variant::Dlstudio, pooling: Pooling::Mean, ..cfg };
    assert!(dl.validate().unwrap_err().to_string().contains("locality_attention"));
}

#[test]
fn rejects_bad_augmentation_values() {
    let mut cfg = ViTConfig { num_classes: 3, ..Default::default() };
    cfg.train.crop_scale = (0.0, 1.0);
    assert!(cfg.validate().unwrap_err().to_string().contains("train.crop_scale"));
    cfg.train.crop_scale = (0.3, 1.0);
    cfg.train.ema_decay = 1.0;
    assert!(cfg.validate().unwrap_err().to_string().contains("train.ema_decay"));
    cfg.train.ema_decay = 0.999;
    cfg.train.mixup_alpha = -1.0;
    assert!(cfg.validate().unwrap_err().to_string().contains("train.mixup_alpha"));
    cfg.train.mixup_alpha = 0.2;
    cfg.train.eval_every = 0;
    assert!(cfg.validate().unwrap_err().to_string().contains("train.eval_every"));
    cfg.train.eval_every = 5;
    assert!(cfg.validate().is_ok());
}

#[test]
fn json_round_trip() {
    let cfg = ViTConfig { num_classes: 5, depth: 3, ..Default::default() };
    assert_eq!(ViTConfig::from_json(&cfg.to_json()).unwrap(), cfg);
}

#[test]
fn unknown_toml_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.toml");
    std::fs::write(&path, "embed_dimm = 3\n").unwrap();
    let msg = ViTConfig::from_toml_file(&path).unwrap_err().to_string();
    assert!(msg.contains("embed_dimm"), "{msg}");
}
