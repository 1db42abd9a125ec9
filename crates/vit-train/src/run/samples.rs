//! `vit-train samples`: writes a few validation images of a data set as PNG
//! files named `<index>_<label>.png`, exactly as the model sees them (after the
//! shared decode/resize), so demos and users can try `vit-infer` on real inputs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::{GrayImage, RgbImage};
use vit::data::{load_splits, LoadOptions};
use vit::{Preprocessor, ViTConfig};

/// File-name-safe form of a label (`T-shirt/top` -> `T-shirt-top`).
pub fn file_safe(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect()
}

/// Writes `count` validation images (spread over the classes) into `out`; returns the files.
pub fn write_samples(cfg: &ViTConfig, data: &Path, out: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let prep = Preprocessor::from_config(cfg);
    let per_class = Some(count.max(1));
    let splits = load_splits(data, &prep, &LoadOptions { max_per_class: per_class, ..Default::default() })?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let side = cfg.image_size as u32;
    let hw = cfg.image_size * cfg.image_size;
    let k = splits.classes.len().max(1);
    // Round-robin over classes so a few samples cover several of them.
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &l) in splits.val.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let order: Vec<usize> = (0..count).filter_map(|j| by_class[j % k].get(j / k).copied()).collect();
    let mut files = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let px = splits.val.image(i);
        let label = &splits.classes[splits.val.labels[i] as usize];
        let path = out.join(format!("{n:03}_{}.png", file_safe(label)));
        let saved = if cfg.in_channels == 1 {
            GrayImage::from_raw(side, side, px.to_vec()).map(|img| img.save(&path))
        } else {
            let rgb: Vec<u8> = (0..hw).flat_map(|p| [px[p], px[hw + p], px[2 * hw + p]]).collect();
            RgbImage::from_raw(side, side, rgb).map(|img| img.save(&path))
        };
        match saved {
            Some(Ok(())) => files.push(path),
            Some(Err(e)) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
            None => anyhow::bail!("image {i} has an unexpected size"),
        }
    }
    Ok(files)
}
