//! A write-through cache of state records in memory, so a local-state
//! session's reads are served from memory instead of a trip to sled on the
//! blocking pool.
//!
//! It is coherent because every write to the `state` tree goes through the
//! one [`crate::SledStore`] of a database, and the store updates the cache
//! right after sled applied the write (on the writer thread), before anyone
//! is answered. A read that missed fills the cache only if no write touched
//! its shard meanwhile (a generation per shard): a value read from sled
//! just before a write can never be put back over the newer one.
//!
//! Absent keys are cached too (a first call reads keys nobody wrote yet).
//! When a shard grows past its share of the budget, its least recently used
//! quarter goes. A budget of 0 turns the cache off.

use edge_host_api::Versioned;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shards (a key's shard is a hash of it): lookups from many sessions at
/// once rarely meet on one lock.
const SHARDS: usize = 64;
/// Bytes counted for an entry besides its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// What a lookup found.
pub(crate) enum Lookup {
    /// The record as of the last write (`None`: no such key).
    Hit(Option<Versioned>),
    /// Not cached; fill with [`Cache::fill`] quoting this generation.
    Miss(u64),
}

pub(crate) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What the cache has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from memory.
    pub hits: u64,
    /// Reads that went to sled.
    pub misses: u64,
    /// Bytes held now (keys, values and a fixed overhead per entry).
    pub bytes: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<Vec<u8>, Entry>,
    bytes: usize,
    /// Bumped by every write into the shard.
    generation: u64,
    /// A clock for least-recently-used eviction.
    tick: u64,
}

struct Entry {
    value: Option<Versioned>,
    used: u64,
}

fn cost(key: &[u8], value: &Option<Versioned>) -> usize {
    key.len() + value.as_ref().map_or(0, |v| v.value.len()) + ENTRY_OVERHEAD
}

impl Cache {
    /// A cache holding about `budget` bytes of keys and values (0: off).
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            shard_budget: budget / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Hits, misses and the bytes held now.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.bytes() as u64,
        }
    }

    fn enabled(&self) -> bool {
        self.shard_budget > 0
    }

    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while a shard is locked leaves it consistent (every
        // update below is a single map operation and a counter), so a
        // poisoned lock is used as it is.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached record of `key`, or the generation a fill must quote.
    pub(crate) fn get(&self, key: &[u8]) -> Lookup {
        if !self.enabled() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss(0);
        }
        let mut shard = self.shard(key);
        shard.tick += 1;
        let tick = shard.tick;
        match shard.entries.get_mut(key) {
            Some(entry) => {
                entry.used = tick;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(entry.value.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss(shard.generation)
            }
        }
    }

    /// Caches what sled returned for a lookup that missed at `generation`,
    /// unless a write reached the shard since (then it may be stale).
    pub(crate) fn fill(&self, key: &[u8], value: Option<Versioned>, generation: u64) {
        if !self.enabled() {
            return;
        }
        let mut shard = self.shard(key);
        if shard.generation == generation {
            self.insert(&mut shard, key.to_vec(), value);
        }
    }

    /// Records a write sled has just applied.
    pub(crate) fn put(&self, key: &[u8], value: Option<Versioned>) {
        if !self.enabled() {
            return;
        }
        let mut shard = self.shard(key);
        shard.generation += 1;
        self.insert(&mut shard, key.to_vec(), value);
    }

    /// Forgets every key starting with `prefix` (a session cleared or
    /// replaced as a whole).
    pub(crate) fn forget_prefix(&self, prefix: &[u8]) {
        if !self.enabled() {
            return;
        }
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.generation += 1;
            let mut freed = 0;
            shard.entries.retain(|k, e| {
                let keep = !k.starts_with(prefix);
                if !keep {
                    freed += cost(k, &e.value);
                }
                keep
            });
            shard.bytes -= freed;
        }
    }

    fn insert(&self, shard: &mut Shard, key: Vec<u8>, value: Option<Versioned>) {
        let added = cost(&key, &value);
        if added > self.shard_budget {
            // Too big to keep: make sure no older copy stays either.
            if let Some(old) = shard.entries.remove(&key) {
                shard.bytes -= cost(&key, &old.value);
            }
            return;
        }
        shard.tick += 1;
        let used = shard.tick;
        if let Some(old) = shard.entries.insert(key.clone(), Entry { value, used }) {
            shard.bytes -= cost(&key, &old.value);
        }
        shard.bytes += added;
        if shard.bytes > self.shard_budget {
            evict(shard, self.shard_budget / 4 * 3);
        }
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }
}

/// Drops the least recently used entries until `shard` holds `target` bytes
/// or less.
fn evict(shard: &mut Shard, target: usize) {
    let mut by_age: Vec<(u64, usize, Vec<u8>)> = shard
        .entries
        .iter()
        .map(|(k, e)| (e.used, cost(k, &e.value), k.clone()))
        .collect();
    by_age.sort_unstable_by_key(|(used, _, _)| *used);
    for (_, size, key) in by_age {
        if shard.bytes <= target {
            break;
        }
        shard.entries.remove(&key);
        shard.bytes -= size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: &str, version: u64) -> Option<Versioned> {
        Some(Versioned {
            value: value.as_bytes().to_vec(),
            version,
        })
    }

    fn hit(cache: &Cache, key: &[u8]) -> Option<Option<Versioned>> {
        match cache.get(key) {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn a_fill_after_a_write_to_its_shard_is_dropped() {
        let cache = Cache::new(1 << 20);
        let Lookup::Miss(generation) = cache.get(b"s\0k") else {
            panic!("empty cache hit")
        };
        // A write lands between the miss and the fill of the old value.
        cache.put(b"s\0k", v("new", 2));
        cache.fill(b"s\0k", v("old", 1), generation);
        assert_eq!(hit(&cache, b"s\0k"), Some(v("new", 2)));
    }

    #[test]
    fn absent_keys_are_cached_and_writes_replace_them() {
        let cache = Cache::new(1 << 20);
        let Lookup::Miss(g) = cache.get(b"s\0k") else {
            panic!()
        };
        cache.fill(b"s\0k", None, g);
        assert_eq!(hit(&cache, b"s\0k"), Some(None));
        cache.put(b"s\0k", v("1", 3));
        assert_eq!(hit(&cache, b"s\0k"), Some(v("1", 3)));
    }

    #[test]
    fn forgetting_a_session_leaves_the_others() {
        let cache = Cache::new(1 << 20);
        cache.put(b"a\0x", v("1", 1));
        cache.put(b"ab\0x", v("2", 2));
        cache.forget_prefix(b"a\0");
        assert_eq!(hit(&cache, b"a\0x"), None);
        assert_eq!(hit(&cache, b"ab\0x"), Some(v("2", 2)));
    }

    #[test]
    fn the_budget_holds_and_recent_entries_stay() {
        let budget = SHARDS * 4096;
        let cache = Cache::new(budget);
        cache.put(b"s\0hot", v("h", 0));
        for i in 0..10_000u32 {
            cache.put(format!("s\0{i}").as_bytes(), v("0123456789", i.into()));
            // One key is used all along: it must survive every eviction.
            let _ = cache.get(b"s\0hot");
        }
        assert!(cache.bytes() <= budget, "{} > {budget}", cache.bytes());
        assert_eq!(hit(&cache, b"s\0hot"), Some(v("h", 0)));
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = Cache::new(0);
        cache.put(b"s\0k", v("1", 1));
        assert_eq!(hit(&cache, b"s\0k"), None);
    }
}
