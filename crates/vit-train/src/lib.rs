//! `vit-train`: everything that needs libtorch. Builds the networks with tch,
//! trains them (CUDA when available, CPU otherwise), evaluates, plots, writes
//! safetensors checkpoints, and exports ONNX through the light `vit` crate,
//! verifying each export with tract.

#![warn(missing_docs)]

pub mod amp;
pub mod augment;
pub mod batches;
pub mod checkpoint;
pub mod cli;
pub mod cpu_memory;
pub mod data_source;
pub mod deploy;
pub mod dist;
pub mod ema;
pub mod evaluate;
pub mod export;
pub mod export_weights;
pub mod fused;
pub mod hf_files;
pub mod import;
pub mod init;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod omp;
pub mod optim;
pub mod plots;
pub mod resume;
pub mod run_dir;
pub mod run_lock;
pub mod samples;
pub mod shard_order;
pub mod shards;
pub mod train;
pub mod trainer;
pub mod verify;
pub mod workers;
