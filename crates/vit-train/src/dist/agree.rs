//! Ranks that train one model must be started alike: the same config (a
//! different batch size or network makes the first broadcast's shapes differ,
//! and gloo aborts the process), the same data and split, the same seed, rates
//! and augmentation (else the replicas drift apart and the run still exits 0).
//! Before the first collective that depends on any of it, every rank sends
//! rank 0 nothing and receives rank 0's facts (a length, then the bytes: both
//! shapes every rank knows), compares them with its own, and an all-reduce of
//! the counts of differences makes every rank stop together, the ones that
//! differ naming each difference.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{DistError, ProcessGroup};

/// What must be equal on every rank: flattened `key = value` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankFacts(BTreeMap<String, String>);

impl RankFacts {
    /// No facts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every leaf of `value`'s serialisation as `prefix.path = value`.
    pub fn add_serialized(&mut self, prefix: &str, value: &impl Serialize) {
        match serde_json::to_value(value) {
            Ok(v) => flatten(prefix, &v, &mut self.0),
            Err(e) => {
                self.0.insert(prefix.to_string(), format!("<not serialisable: {e}>"));
            }
        }
    }

    /// Adds one fact.
    pub fn insert(&mut self, key: &str, value: impl ToString) {
        self.0.insert(key.to_string(), value.to_string());
    }

    /// Drops the facts under `key` (a path that may differ between machines).
    pub fn remove(&mut self, key: &str) {
        let nested = format!("{key}.");
        self.0.retain(|k, _| k != key && !k.starts_with(&nested));
    }

    /// One line per fact that differs from `rank0`'s.
    pub fn differences(&self, rank0: &Self) -> Vec<String> {
        let missing = "(not set)";
        let keys: std::collections::BTreeSet<&String> = self.0.keys().chain(rank0.0.keys()).collect();
        keys.into_iter()
            .filter_map(|k| {
                let (mine, theirs) = (self.0.get(k), rank0.0.get(k));
                (mine != theirs).then(|| {
                    format!(
                        "{k} = {} here, {} on rank 0",
                        mine.map_or(missing, String::as_str),
                        theirs.map_or(missing, String::as_str)
                    )
                })
            })
            .collect()
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        serde_json::Value::Null => {}
        leaf => {
            out.insert(prefix.to_string(), leaf.to_string());
        }
    }
}

/// Ranks whose facts are not rank 0's.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}\nstart every rank with the same config, data and flags (torchrun runs one command on every node: \
     check each node's files and the flags given there)",
    describe(*.rank, .differences, *.ranks_differing)
)]
pub struct Disagreement {
    /// This rank.
    pub rank: usize,
    /// What this rank has that rank 0 does not (empty when only other ranks differ).
    pub differences: Vec<String>,
    /// How many ranks differ from rank 0.
    pub ranks_differing: usize,
}

fn describe(rank: usize, differences: &[String], ranks_differing: usize) -> String {
    if differences.is_empty() {
        return format!(
            "{ranks_differing} rank(s) were not started like rank 0 (their errors say how); rank {rank} stops with them"
        );
    }
    let lines: Vec<String> = differences.iter().map(|d| format!("  - {d}")).collect();
    format!("rank {rank} was not started like rank 0:\n{}", lines.join("\n"))
}

impl ProcessGroup {
    /// Compares `facts` with rank 0's. Every rank gets the same outcome: `Ok`
    /// on all, or a [`Disagreement`] on all (naming the differences on the
    /// ranks that differ), so none is left waiting in a later collective.
    pub fn agree(&self, facts: &RankFacts) -> Result<(), AgreeError> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let mine = serde_json::to_vec(facts).unwrap_or_default();
        let len = Tensor::from_slice(&[mine.len() as i64]);
        self.broadcast_from_rank0(&[&len])?;
        let n = len.int64_value(&[0]).max(0) as usize;
        let bytes = if self.rank() == 0 {
            Tensor::from_slice(&mine)
        } else {
            Tensor::zeros([n as i64], (Kind::Uint8, tch::Device::Cpu))
        };
        self.broadcast_from_rank0(&[&bytes])?;
        let theirs: Vec<u8> = Vec::try_from(&bytes.to_device(tch::Device::Cpu)).unwrap_or_default();
        let differences = match serde_json::from_slice::<RankFacts>(&theirs) {
            Ok(rank0) => facts.differences(&rank0),
            Err(e) => vec![format!("rank 0's facts could not be read ({e}): is it the same vit-train?")],
        };
        let count = Tensor::from_slice(&[i64::from(!differences.is_empty())]);
        self.all_reduce_sum(&[&count])?;
        match count.int64_value(&[0]) {
            0 => Ok(()),
            k => {
                Err(AgreeError::Disagree(Disagreement { rank: self.rank(), differences, ranks_differing: k as usize }))
            }
        }
    }
}

/// Why [`ProcessGroup::agree`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AgreeError {
    /// The ranks were not started alike.
    #[error(transparent)]
    Disagree(#[from] Disagreement),
    /// A collective failed.
    #[error(transparent)]
    Dist(#[from] DistError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Train {
        lr: f64,
        seed: u64,
    }

    #[derive(Serialize)]
    struct Cfg {
        depth: usize,
        train: Train,
        path: String,
    }

    #[test]
    fn differences_name_each_key_with_both_values_and_removed_keys_do_not_count() {
        let facts = |lr: f64, depth: usize, path: &str| {
            let mut f = RankFacts::new();
            f.add_serialized("config", &Cfg { depth, train: Train { lr, seed: 1 }, path: path.into() });
            f.remove("config.path");
            f
        };
        let rank0 = facts(1e-3, 4, "/data/a");
        assert!(facts(1e-3, 4, "/mnt/b").differences(&rank0).is_empty());
        let d = facts(2e-3, 6, "/data/a").differences(&rank0);
        assert_eq!(d, vec!["config.depth = 6 here, 4 on rank 0", "config.train.lr = 0.002 here, 0.001 on rank 0"]);
        let mut extra = facts(1e-3, 4, "/data/a");
        extra.insert("resume", true);
        assert_eq!(extra.differences(&rank0), vec!["resume = true here, (not set) on rank 0"]);
    }
}
