//! The ViT graph, laid out as the tch model in `crates/vit-train/src/model/`:
//! this module holds what both variants share (the tensor list and its
//! [`Layout`]s, input and output names, the patch embedding with its optional
//! conv stem, class token, position embedding, test-time flip, layer norm,
//! head) and dispatches on [`Variant`]; [`standard`] (timm) and [`dlstudio`]
//! (ViTHelper) are leaves that import only from here and from the builder.
//!
//! Shapes inside the graph are constants computed from the config, with `-1`
//! for the batch in every `Reshape`; the only shape read at run time is the
//! batch size, for broadcasting the class token. So one file runs at any batch.

mod dlstudio;
mod standard;

use super::builder::{i64_of, Dim, GraphBuilder};
use super::proto::GraphProto;
use crate::config::{Stem, Variant, ViTConfig};

/// Name of the graph input: normalised pixels `[batch, C, H, W]`.
pub const INPUT_NAME: &str = "pixel_values";
/// Name of the graph output: `[batch, num_classes]` logits.
pub const OUTPUT_NAME: &str = "logits";
/// The symbolic batch dimension of input and output.
pub const BATCH_DIM: &str = "batch";
/// Name of the graph.
pub const GRAPH_NAME: &str = "vit";

/// How a checkpoint tensor is stored as an initializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Unchanged.
    AsIs,
    /// A PyTorch `Linear` weight `[out, in]`, stored transposed as `[in, out]`
    /// (the right operand of `MatMul`) under the same name.
    LinearWeight,
}

/// One tensor the graph needs from the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// State-dict name, also the initializer's name.
    pub name: String,
    /// Shape in the checkpoint (PyTorch layout).
    pub shape: Vec<usize>,
    /// How it is stored in the ONNX file.
    pub layout: Layout,
}

/// Collects specs in graph order.
#[derive(Debug, Default)]
pub struct Specs(pub Vec<TensorSpec>);

impl Specs {
    /// A tensor stored as is.
    pub fn plain(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.0.push(TensorSpec { name: name.into(), shape: shape.to_vec(), layout: Layout::AsIs });
    }

    /// A `Linear(inp, out)` layer `{prefix}.weight` `[out, inp]` (+ `{prefix}.bias` `[out]`).
    pub fn linear(&mut self, prefix: &str, inp: usize, out: usize, bias: bool) {
        self.0.push(TensorSpec {
            name: format!("{prefix}.weight"),
            shape: vec![out, inp],
            layout: Layout::LinearWeight,
        });
        if bias {
            self.plain(format!("{prefix}.bias"), &[out]);
        }
    }

    /// A LayerNorm over `dim`: `{prefix}.weight`, `{prefix}.bias`.
    pub fn layer_norm(&mut self, prefix: &str, dim: usize) {
        self.plain(format!("{prefix}.weight"), &[dim]);
        self.plain(format!("{prefix}.bias"), &[dim]);
    }
}

/// Every checkpoint tensor the config's graph needs, in graph order.
pub fn tensor_specs(cfg: &ViTConfig) -> Vec<TensorSpec> {
    let mut s = Specs::default();
    embed_specs(cfg, &mut s);
    match cfg.variant {
        Variant::Standard => standard::tensor_specs(cfg, &mut s),
        Variant::Dlstudio => dlstudio::tensor_specs(cfg, &mut s),
    }
    s.linear("head", cfg.embed_dim, cfg.num_classes, true);
    s.0
}

/// The graph for `cfg`. The builder must already hold every initializer of
/// [`tensor_specs`] (the nodes refer to them by name).
pub fn build(cfg: &ViTConfig, mut b: GraphBuilder) -> GraphProto {
    let (c, h) = (cfg.in_channels, cfg.image_size);
    let x = b.input(INPUT_NAME, &[Dim::Symbolic(BATCH_DIM), Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(h)]);
    let x = if cfg.test_time_flip { with_mirror_images(&mut b, cfg, &x) } else { x };
    let x = embed(&mut b, cfg, &x);
    let logits = match cfg.variant {
        Variant::Standard => standard::body(&mut b, cfg, &x),
        Variant::Dlstudio => dlstudio::body(&mut b, cfg, &x),
    };
    let logits = if cfg.test_time_flip { mean_over_mirrors(&mut b, cfg, &logits) } else { logits };
    b.output(&logits, OUTPUT_NAME, &[Dim::Symbolic(BATCH_DIM), Dim::Fixed(cfg.num_classes)]);
    b.finish(GRAPH_NAME)
}

/// Test-time flip, first half: `[B, C, H, W]` -> `[x; flip_W(x)]` `[2B, C, H, W]`
/// (the mirror images by a `Gather` of the columns in reverse order).
fn with_mirror_images(b: &mut GraphBuilder, cfg: &ViTConfig, x: &str) -> String {
    let reversed: Vec<i64> = (0..i64_of(cfg.image_size)).rev().collect();
    let mirrored = b.gather("test_time_flip", x, "reversed_columns", &reversed, 3);
    b.concat("test_time_flip", &[x, &mirrored], 0)
}

/// Test-time flip, second half: `[2B, K]` -> `[2, B, K]` -> mean over the pair -> `[B, K]`.
fn mean_over_mirrors(b: &mut GraphBuilder, cfg: &ViTConfig, logits: &str) -> String {
    let pairs = b.reshape("test_time_flip", logits, &[2, -1, i64_of(cfg.num_classes)]);
    b.reduce_mean("test_time_flip", &pairs, &[0], false)
}

/// Prefix of conv-stem stage `i`.
fn stem_prefix(i: usize) -> String {
    format!("patch_embed.stem.{i}")
}

/// The patch embedding's tensors: conv stem (if any), projection, class token, position embedding.
fn embed_specs(cfg: &ViTConfig, s: &mut Specs) {
    let (mut c, mut p) = (cfg.in_channels, cfg.patch_size);
    if cfg.stem == Stem::Conv {
        for (i, (out, _)) in cfg.stem_layers().into_iter().enumerate() {
            let st = stem_prefix(i);
            s.plain(format!("{st}.conv.weight"), &[out, c, 3, 3]);
            for t in ["weight", "bias", "running_mean", "running_var"] {
                s.plain(format!("{st}.bn.{t}"), &[out]);
            }
            c = out;
        }
        p = 1; // the stem already reached the patch grid: 1x1 projection
    }
    let e = cfg.embed_dim;
    s.plain("patch_embed.proj.weight", &[e, c, p, p]);
    s.plain("patch_embed.proj.bias", &[e]);
    if cfg.class_token {
        s.plain("cls_token", &[1, 1, e]);
    }
    s.plain("pos_embed", &[1, cfg.num_tokens(), e]);
}

/// Patch embedding, class token (if any), position embedding: `[B, C, H, W]` -> `[B, L, E]`.
fn embed(b: &mut GraphBuilder, cfg: &ViTConfig, x: &str) -> String {
    let (e, n) = (i64_of(cfg.embed_dim), i64_of(cfg.num_patches()));
    let mut x_in = x.to_owned();
    let mut k = cfg.patch_size;
    if cfg.stem == Stem::Conv {
        for (i, (_, stride)) in cfg.stem_layers().into_iter().enumerate() {
            let st = stem_prefix(i);
            let y = b.conv(&format!("{st}.conv"), &x_in, &format!("{st}.conv.weight"), None, 3, stride, 1);
            let bn = |t: &str| format!("{st}.bn.{t}");
            let y = b.batch_norm(
                &format!("{st}.bn"),
                &y,
                [&bn("weight"), &bn("bias"), &bn("running_mean"), &bn("running_var")],
                1e-5,
            );
            x_in = b.relu(&format!("{st}.act"), &y); // [B, C_i, H / s_0..s_i, W / s_0..s_i]
        }
        k = 1;
    }
    let scope = "patch_embed.proj";
    let y = b.conv(scope, &x_in, "patch_embed.proj.weight", Some("patch_embed.proj.bias"), k, k, 0);
    let y = b.reshape(scope, &y, &[-1, e, n]); // [B, E, N]
    let patches = b.transpose(scope, &y, &[0, 2, 1]); // [B, N, E]
    if !cfg.class_token {
        return b.add("pos_embed", &patches, "pos_embed");
    }

    // cls_token [1, 1, E] broadcast to [B, 1, E]; B read from the input.
    let batch = b.shape("cls_token", x, 0, 1); // [B]
    let rest = b.const_ints("cls_shape_tail", &[1, e]);
    let target = b.concat("cls_token", &[&batch, &rest], 0); // [B, 1, E]
    let cls = b.expand("cls_token", "cls_token", &target);

    let seq = b.concat("embed", &[&cls, &patches], 1); // [B, L, E]
    b.add("pos_embed", &seq, "pos_embed")
}

/// `LayerNorm` with `{prefix}.weight` / `{prefix}.bias`.
fn layer_norm(b: &mut GraphBuilder, cfg: &ViTConfig, prefix: &str, x: &str) -> String {
    let (w, bias) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
    b.layer_norm(prefix, x, &w, &bias, cfg.layer_norm_eps as f32)
}

/// The `head` linear layer on pooled `[B, E]` features.
fn head(b: &mut GraphBuilder, pooled: &str) -> String {
    b.linear("head", pooled, true)
}
