//! Position embeddings for another patch grid, as timm's
//! `resample_abs_pos_embed` with its defaults (the one timm applies when a
//! checkpoint is loaded at another image size): the prefix (class) token is
//! kept, the grid part is reshaped to `[1, E, g, g]` and resized with
//! antialiased bicubic interpolation, `align_corners = False`.

use tch::{Kind, Tensor};

/// `[1, prefix + g^2, E]` -> `[1, prefix + new_grid^2, E]`.
///
/// # Shapes
/// `pos`: `[1, prefix + g * g, E]` with a square grid `g`.
pub fn resample_abs_pos_embed(pos: &Tensor, new_grid: i64, prefix: i64) -> Tensor {
    let (_, l, e) = pos.size3().expect("a position embedding is [1, L, E]");
    let old = ((l - prefix) as f64).sqrt().round() as i64;
    let kind = pos.kind();
    let tokens = pos.narrow(1, 0, prefix);
    let grid = pos.narrow(1, prefix, l - prefix).to_kind(Kind::Float).reshape([1, old, old, e]).permute([0, 3, 1, 2]);
    let grid = grid.internal_upsample_bicubic2d_aa([new_grid, new_grid], false, None, None); // [1, E, g', g']
    let grid = grid.permute([0, 2, 3, 1]).reshape([1, new_grid * new_grid, e]).to_kind(kind);
    Tensor::cat(&[tokens, grid], 1)
}
