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

#[test]
fn zero_epochs_is_rejected() {
    let mut cfg = ViTConfig { num_classes: 3, ..Default::default() };
    cfg.train.epochs = 0;
    let msg = cfg.validate().unwrap_err().to_string();
    assert!(msg.contains("train.epochs") && msg.contains("at least 1"), "{msg}");
}

#[test]
fn every_float_key_rejects_nan_and_infinity_by_name() {
    type Set = fn(&mut ViTConfig, f64);
    let keys: [(&str, Set); 22] = [
        ("mlp_ratio", |c, v| c.mlp_ratio = v),
        ("layer_norm_eps", |c, v| c.layer_norm_eps = v),
        ("dropout", |c, v| c.dropout = v),
        ("drop_path", |c, v| c.drop_path = v),
        ("preprocess.mean", |c, v| c.preprocess.mean = vec![0.5, v as f32, 0.5]),
        ("preprocess.std", |c, v| c.preprocess.std = vec![v as f32]),
        ("train.lr", |c, v| c.train.lr = v),
        ("train.betas", |c, v| c.train.betas.0 = v),
        ("train.betas", |c, v| c.train.betas.1 = v),
        ("train.eps", |c, v| c.train.eps = v),
        ("train.weight_decay", |c, v| c.train.weight_decay = v),
        ("train.warmup_epochs", |c, v| c.train.warmup_epochs = v),
        ("train.grad_clip", |c, v| c.train.grad_clip = v),
        ("train.label_smoothing", |c, v| c.train.label_smoothing = v),
        ("train.crop_scale", |c, v| c.train.crop_scale.0 = v),
        ("train.crop_scale", |c, v| c.train.crop_scale.1 = v),
        ("train.color_jitter", |c, v| c.train.color_jitter = v),
        ("train.mixup_alpha", |c, v| c.train.mixup_alpha = v),
        ("train.cutmix_alpha", |c, v| c.train.cutmix_alpha = v),
        ("train.random_erasing", |c, v| c.train.random_erasing = v),
        ("train.ema_decay", |c, v| c.train.ema_decay = v),
        ("train.lr", |c, v| c.train.lr = -v),
    ];
    for (key, set) in keys {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut cfg = ViTConfig { num_classes: 3, ..Default::default() };
            set(&mut cfg, bad);
            let msg = cfg.validate().map(|()| String::new()).unwrap_or_else(|e| e.to_string());
            assert!(msg.contains(&format!("`{key}`")), "{key} = {bad}: {msg:?}");
        }
    }
}

#[test]
fn non_finite_values_in_a_toml_preset_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in
        [("[train]\nweight_decay = inf\n", "train.weight_decay"), ("[train]\ngrad_clip = nan\n", "train.grad_clip")]
    {
        let path = dir.path().join("x.toml");
        std::fs::write(&path, text).unwrap();
        let msg = ViTConfig::from_toml_file(&path).unwrap_err().to_string();
        assert!(msg.contains(key) && msg.contains("finite"), "{msg}");
    }
}
