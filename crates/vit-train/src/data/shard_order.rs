//! The epoch order of data stored in tar shards, WebDataset's way: the shards
//! are shuffled per epoch, each data-parallel rank takes its own shards
//! (`shards[rank::world]`), and their samples, in shard order, pass through a
//! seeded shuffle buffer. Reads stay near-sequential within a shard while
//! batches still mix shards. [`crate::data::batches::epoch_batches_of`] is the one
//! place that picks this order or the plain shuffle of image folders.

use std::ops::Range;

use rand::{seq::SliceRandom, Rng};
use rand_chacha::ChaCha8Rng;

/// Samples held back by the shuffle buffer by default (`--shuffle-buffer`).
pub const DEFAULT_SHUFFLE_BUFFER: usize = 1000;

/// Rank `rank`'s sample indices of one epoch over `shards` (index ranges),
/// drawn from `rng`: the shards shuffled, every `world`-th one from `rank`
/// kept, their samples mixed by a buffer of `buffer` samples. With several
/// ranks, each gets `ceil(total / world)` samples, so all take the same number
/// of steps: a rank with fewer repeats its first samples, one with more drops
/// its last (which ones changes with the epoch's shard order).
pub fn shard_epoch_order(
    shards: &[Range<usize>],
    buffer: usize,
    rng: &mut ChaCha8Rng,
    (rank, world): (usize, usize),
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..shards.len()).collect();
    order.shuffle(rng);
    let mine = order.into_iter().skip(rank).step_by(world.max(1)).flat_map(|s| shards[s].clone());
    let mut samples = shuffle_buffer(mine, buffer, rng);
    if world > 1 && !samples.is_empty() {
        let per_rank = shards.iter().map(Range::len).sum::<usize>().div_ceil(world);
        samples = samples.iter().copied().cycle().take(per_rank).collect();
    }
    samples
}

/// WebDataset's shuffle buffer: holds up to `size` samples; once full, each
/// arriving sample takes the place of a random one, which leaves; at the end
/// the rest leave shuffled. `size` 0 or 1 keeps the order.
pub fn shuffle_buffer(samples: impl Iterator<Item = usize>, size: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut out = Vec::with_capacity(samples.size_hint().0);
    let mut held: Vec<usize> = Vec::with_capacity(size.min(1 << 16));
    for sample in samples {
        if size <= 1 {
            out.push(sample);
            continue;
        }
        if held.len() < size {
            held.push(sample);
            continue;
        }
        let k = rng.random_range(0..held.len());
        out.push(std::mem::replace(&mut held[k], sample));
    }
    held.shuffle(rng);
    out.extend(held);
    out
}

/// Why `shards` training shards cannot be read by `world` ranks (each rank needs one of its own).
pub fn check_shards_for_ranks(shards: usize, world: usize) -> Result<(), String> {
    if shards < world {
        return Err(format!(
            "the training data has {shards} tar shard(s) for {world} ranks, and each rank reads shards of its own; \
             write more, smaller shards (vit-train shards --shard-size) or train on at most {shards} rank(s)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::data::batches::epoch_rng;

    fn shards() -> Vec<Range<usize>> {
        vec![0..5, 5..9, 9..16, 16..20, 20..23]
    }

    fn shard_of(sample: usize) -> usize {
        shards().iter().position(|r| r.contains(&sample)).unwrap()
    }

    #[test]
    fn every_sample_comes_once_per_epoch_and_shards_change_order() {
        let one = |epoch| shard_epoch_order(&shards(), 4, &mut epoch_rng(5, epoch), (0, 1));
        for epoch in 0..3 {
            let mut seen = one(epoch);
            seen.sort_unstable();
            assert_eq!(seen, (0..23).collect::<Vec<_>>(), "epoch {epoch}");
        }
        assert_eq!(one(1), one(1), "an epoch's order is reproducible");
        let first_shards = |order: Vec<usize>| {
            let mut firsts: Vec<usize> = Vec::new();
            for s in order.into_iter().map(shard_of) {
                if !firsts.contains(&s) {
                    firsts.push(s);
                }
            }
            firsts
        };
        let orders: Vec<_> = (0..4).map(|e| first_shards(one(e))).collect();
        assert!(orders.windows(2).any(|w| w[0] != w[1]), "the shard order changes between epochs: {orders:?}");
    }

    #[test]
    fn two_ranks_read_disjoint_shards_and_as_many_samples() {
        for epoch in 0..4 {
            let ranks: Vec<Vec<usize>> =
                (0..2).map(|r| shard_epoch_order(&shards(), 3, &mut epoch_rng(9, epoch), (r, 2))).collect();
            assert!(ranks.iter().all(|r| r.len() == 12), "ceil(23 / 2) each");
            let shards_of = |r: &Vec<usize>| r.iter().map(|&s| shard_of(s)).collect::<std::collections::BTreeSet<_>>();
            assert!(shards_of(&ranks[0]).is_disjoint(&shards_of(&ranks[1])), "epoch {epoch}: {ranks:?}");
        }
        assert!(check_shards_for_ranks(1, 2).unwrap_err().contains("1 tar shard(s) for 2 ranks"));
    }

    #[test]
    fn the_buffer_mixes_within_its_reach_and_keeps_every_sample() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let out = shuffle_buffer(0..100, 10, &mut rng);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(out, (0..100).collect::<Vec<_>>());
        // A sample leaves at most `size` places before it arrived.
        assert!(out.iter().enumerate().all(|(pos, &s)| pos + 10 >= s), "{out:?}");
        assert_eq!(shuffle_buffer(0..5, 1, &mut rng), vec![0, 1, 2, 3, 4]);
    }
}
