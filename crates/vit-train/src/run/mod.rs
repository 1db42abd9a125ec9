//! The run folder and everything written into it: its layout ([`dir`]), the
//! one-process lock ([`lock`]), the record of the data it trains on ([`data_index`]), what a resume may change ([`resume`]),
//! checkpoints ([`checkpoint`]), records ([`metrics`]), plots ([`plots`]), TensorBoard events ([`events`]) and
//! sample images ([`samples`]).

pub mod checkpoint;
pub mod data_index;
pub mod dir;
pub mod events;
pub mod lock;
pub mod metrics;
pub mod plots;
pub mod resume;
pub mod samples;
