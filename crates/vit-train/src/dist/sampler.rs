//! Per-rank shards of an epoch's order, with `torch.utils.data.DistributedSampler`'s
//! semantics (`drop_last = false`): the whole shuffled index list is padded by
//! repeating its start up to a multiple of the world size, and rank `r` takes
//! `order[r::world]`. The rank of this process is process-wide state, set once when
//! it joins a process group, so the data pipeline shards without knowing about ranks.

use std::sync::OnceLock;

static RANK: OnceLock<(usize, usize)> = OnceLock::new();

/// Records this process's `rank` in a world of `world` ranks (first call wins).
pub fn set_rank(rank: usize, world: usize) {
    let _ = RANK.set((rank, world));
}

/// `(rank, world size)` of this process; `(0, 1)` outside a process group.
pub fn rank() -> (usize, usize) {
    RANK.get().copied().unwrap_or((0, 1))
}

/// Rank `rank`'s shard of `order` in a world of `world` ranks.
pub fn shard_of(order: &[usize], rank: usize, world: usize) -> Vec<usize> {
    if world <= 1 || order.is_empty() {
        return order.to_vec();
    }
    let padded = order.len().div_ceil(world) * world;
    (rank..padded).step_by(world).map(|i| order[i % order.len()]).collect()
}

/// This process's shard of `order` (all of it outside a process group).
pub fn shard(order: Vec<usize>) -> Vec<usize> {
    match rank() {
        (_, 1) => order,
        (r, w) => shard_of(&order, r, w),
    }
}

/// Images per rank and epoch for a data set of `len` images.
pub fn shard_len(len: usize) -> usize {
    len.div_ceil(rank().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_cover_the_data_and_pad_from_the_start() {
        let order = vec![4, 2, 0, 3, 1];
        let shards: Vec<Vec<usize>> = (0..2).map(|r| shard_of(&order, r, 2)).collect();
        assert_eq!(shards, vec![vec![4, 0, 1], vec![2, 3, 4]]);
        let order: Vec<usize> = (0..12).rev().collect();
        let mut all: Vec<usize> = (0..3).flat_map(|r| shard_of(&order, r, 3)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
    }
}
