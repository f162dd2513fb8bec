//! The synthetic inventory: which node holds which key, without containerd.
//!
//! Every node holds `D` keys in three classes, so lookups can ask for keys held by one, by
//! three and by half of the nodes (a popular base image):
//!
//! | class | distinct keys | holders of a key | keys per node |
//! |---|---|---|---|
//! | popular | `P` = D/5 (even, ≥ 2) | every other node (key `j`: nodes `i` with `i + j` even) | P/2 |
//! | shared | `T` = D/10 (≥ 1) per node | nodes `i`, `i+1`, `i+2` (mod N) for the `T` keys node `i` owns | 3T |
//! | unique | D − P/2 − 3T per node | one node | D − P/2 − 3T |
//!
//! One key in ten of each class is an image tag (`bench.local/<class>-<n>:v1`), the others
//! digests of their names.

use spegel_oci::Digest;
use spegel_routing::Key;

/// How many nodes hold a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Unique,
    Shared,
    Popular,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Unique, Class::Shared, Class::Popular];

    pub fn name(self) -> &'static str {
        match self {
            Class::Unique => "1",
            Class::Shared => "3",
            Class::Popular => "N/2",
        }
    }
}

/// The inventory of `nodes` nodes with `per_node` keys each.
pub struct Inventory {
    nodes: usize,
    popular: usize,
    shared: usize,
    unique: usize,
}

impl Inventory {
    /// Needs at least 3 nodes and 5 keys per node.
    pub fn new(nodes: usize, per_node: usize) -> Inventory {
        let popular = (per_node / 5).max(2) & !1;
        let shared = (per_node / 10).max(1);
        let unique = per_node.saturating_sub(popular / 2 + 3 * shared);
        Inventory {
            nodes,
            popular,
            shared,
            unique,
        }
    }

    /// Distinct keys in the whole cluster.
    pub fn distinct_keys(&self) -> usize {
        self.popular + self.nodes * (self.shared + self.unique)
    }

    /// Every key node `i` holds.
    pub fn keys_of(&self, i: usize) -> Vec<Key> {
        let n = self.nodes;
        let popular = (0..self.popular)
            .filter(|j| (i + j).is_multiple_of(2))
            .map(|j| key("popular", j));
        let shared = (0..3).flat_map(|back| {
            let owner = (i + n - back) % n;
            (0..self.shared).map(move |j| key("shared", owner * self.shared + j))
        });
        let unique = (0..self.unique).map(|j| key("unique", i * self.unique + j));
        popular.chain(shared).chain(unique).collect()
    }

    /// The `pick`-th key of `class` (wrapping) and the nodes that hold it.
    pub fn key_of_class(&self, class: Class, pick: usize) -> (Key, Vec<usize>) {
        let n = self.nodes;
        match class {
            Class::Popular => {
                let j = pick % self.popular;
                let holders = (0..n).filter(|i| (i + j).is_multiple_of(2)).collect();
                (key("popular", j), holders)
            }
            Class::Shared => {
                let index = pick % (n * self.shared);
                let owner = index / self.shared;
                (
                    key("shared", index),
                    (0..3).map(|b| (owner + b) % n).collect(),
                )
            }
            Class::Unique => {
                // Fall back to shared keys when D is so small that nodes hold no unique key.
                if self.unique == 0 {
                    return self.key_of_class(Class::Shared, pick);
                }
                let index = pick % (n * self.unique);
                (key("unique", index), vec![index / self.unique])
            }
        }
    }
}

fn key(class: &str, n: usize) -> Key {
    if n.is_multiple_of(10) {
        Key::tag("bench.local", &format!("{class}-{n}"), "v1")
    } else {
        Key::Digest(Digest::sha256_of(format!("{class}-{n}").as_bytes()))
    }
}

/// A small deterministic generator (SplitMix64), so runs pick the same lookups.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % bound as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn every_node_holds_d_keys_and_every_key_its_class_of_holders() {
        let (n, d) = (10, 40);
        let inventory = Inventory::new(n, d);
        let mut holders: HashMap<Key, Vec<usize>> = HashMap::new();
        for i in 0..n {
            let keys = inventory.keys_of(i);
            assert_eq!(keys.len(), d, "node {i}");
            for key in keys {
                holders.entry(key).or_default().push(i);
            }
        }
        assert_eq!(holders.len(), inventory.distinct_keys());
        for class in Class::ALL {
            for pick in 0..25 {
                let (key, mut want) = inventory.key_of_class(class, pick);
                want.sort();
                assert_eq!(holders[&key], want, "{class:?} {pick}");
            }
        }
        assert_eq!(inventory.key_of_class(Class::Popular, 0).1.len(), n / 2);
    }

    #[test]
    fn the_generator_stays_below_its_bound() {
        let mut rng = Rng::new(7);
        assert!((0..1000).all(|_| rng.below(3) < 3));
    }
}
