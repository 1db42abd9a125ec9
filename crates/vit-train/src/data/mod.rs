//! Images into batches: where a run's images live ([`source`]), how they become
//! mini-batches ([`batches`], [`augment`]) on worker threads ([`workers`]), the
//! epoch order of tar shards ([`shard_order`]) and the shard writer ([`shards`]);
//! or kept on the training device and batched there ([`resident`]).

pub mod augment;
pub mod batches;
pub mod resident;
pub mod shard_order;
pub mod shards;
pub mod source;
pub mod workers;
