//! A bounded, least-recently-used cache of document states.
//!
//! A late-joined reranker's cost without an index is the document towers (a full bi-encoder pass
//! per document); its query side is cheap. Engines that call a rerank stage send the same popular
//! documents again and again, so the states of documents seen before are kept, keyed by a hash of
//! their title and text, up to a byte budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sieve_core::DocStates;

/// The identity of a document's content.
pub type DocKey = [u8; 32];

/// The key of a document with this title and text.
pub fn doc_key(title: &str, text: &str) -> DocKey {
    let mut hasher = Sha256::new();
    hasher.update((title.len() as u64).to_le_bytes());
    hasher.update(title.as_bytes());
    hasher.update(text.as_bytes());
    hasher.finalize().into()
}

/// Bytes one entry holds.
fn entry_bytes(states: &DocStates) -> usize {
    states.codes.len() + 4 * (states.scales.len() + states.vector.len()) + 96
}

/// The cache; not synchronised (the model worker owns it).
pub struct StateCache {
    budget: usize,
    used: usize,
    tick: u64,
    entries: HashMap<DocKey, (Arc<DocStates>, u64)>,
    by_age: BTreeMap<u64, DocKey>,
}

impl StateCache {
    /// An empty cache holding at most `budget` bytes (0 = keeps nothing).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// The states of `key`, if cached (and marks them recently used).
    pub fn get(&mut self, key: &DocKey) -> Option<Arc<DocStates>> {
        self.tick += 1;
        let tick = self.tick;
        let (states, age) = self.entries.get_mut(key)?;
        self.by_age.remove(age);
        *age = tick;
        self.by_age.insert(tick, *key);
        Some(states.clone())
    }

    /// Keeps `states` for `key`, evicting the least recently used entries to stay in budget.
    pub fn insert(&mut self, key: DocKey, states: Arc<DocStates>) {
        let size = entry_bytes(&states);
        if size > self.budget {
            return;
        }
        if let Some((old, age)) = self.entries.remove(&key) {
            self.by_age.remove(&age);
            self.used -= entry_bytes(&old);
        }
        while self.used + size > self.budget {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&oldest) {
                self.used -= entry_bytes(&old);
            }
        }
        self.tick += 1;
        self.by_age.insert(self.tick, key);
        self.entries.insert(key, (states, self.tick));
        self.used += size;
    }

    /// Bytes held now.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(tokens: usize) -> Arc<DocStates> {
        Arc::new(DocStates {
            vector: vec![0.5; 4],
            codes: vec![1; tokens * 8],
            scales: vec![1.0; tokens],
            rank: 8,
        })
    }

    #[test]
    fn evicts_the_least_recently_used_within_budget() {
        let one = entry_bytes(&states(10));
        let mut cache = StateCache::new(2 * one);
        let (a, b, c) = (doc_key("", "a"), doc_key("", "b"), doc_key("", "c"));
        cache.insert(a, states(10));
        cache.insert(b, states(10));
        assert!(cache.get(&a).is_some()); // a is now the most recent
        cache.insert(c, states(10)); // evicts b
        assert!(cache.get(&b).is_none());
        assert!(cache.get(&a).is_some() && cache.get(&c).is_some());
        assert_eq!(cache.len(), 2);
        assert!(cache.used_bytes() <= 2 * one);
        // Title and text are not confused: ("ab", "") differs from ("a", "b").
        assert_ne!(doc_key("ab", ""), doc_key("a", "b"));
        let mut off = StateCache::new(0);
        off.insert(a, states(1));
        assert!(off.is_empty());
    }
}
