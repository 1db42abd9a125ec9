//! Training: the loop of `vit-train fit` ([`fit`]) drives a [`trainer::Trainer`]
//! (network, optimiser from [`optim`] with the C++ shim's fused kernels,
//! precision from [`amp`], weight average from [`ema`]) and scores it with
//! [`evaluate`].

pub mod amp;
pub mod ema;
pub mod evaluate;
pub mod fit;
pub mod graph;
pub mod host_read;
pub mod optim;
pub mod report;
pub mod tally;
pub mod trainer;
