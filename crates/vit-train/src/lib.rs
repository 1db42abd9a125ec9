//! `vit-train`: everything that needs libtorch. Builds the networks with tch,
//! trains them (CUDA when available, CPU otherwise), evaluates, plots, writes
//! safetensors checkpoints, and exports ONNX through the light `vit` crate,
//! verifying each export with tract.
//!
//! The folders follow the data flow, and imports go down it (`cli` on top;
//! `data`, `model`, `host` and `shim` at the bottom):
//!
//! | folder | stage |
//! |---|---|
//! | [`data`] | images into batches: sources, batches, augmentation, worker threads, shard order, the shard writer |
//! | [`model`] | the networks (tch) |
//! | [`train`] | the loop, the trainer, evaluation, optimisers and fused kernels, precision, weight average |
//! | [`run`] | the run folder: lock, resume rules, checkpoints, records, plots, TensorBoard events, samples |
//! | [`export`] | ONNX out: export, deployment formats, int8, verification, Hugging Face files, foreign weights |
//! | [`import`] | weights in: timm / Hugging Face checkpoints, `fit --init` |
//! | [`dist`] | data-parallel training over c10d (Gloo, NCCL) |
//! | [`host`] | facts of the machine: memory estimate, allocator, OpenMP wait policy |
//! | [`shim`] | safe Rust over the C++ shim of `csrc/`: fused AdamW, autocast, channels-last |
//! | [`cli`] | the `vit-train` command line |

#![warn(missing_docs)]

pub mod cli;
pub mod data;
pub mod dist;
pub mod export;
pub mod host;
pub mod import;
pub mod model;
pub mod run;
pub mod shim;
pub mod train;
