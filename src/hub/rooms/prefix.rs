//! What each participant probably holds in its KV cache: a bounded LRU set of the prompt-prefix
//! block hashes ([`prefix_chain`]) of the requests it was given. Cache-aware routing sends a
//! request where the longest head of its chain is found. Only hashes are kept, never prompts.
//!
//! [`prefix_chain`]: crate::hub::proxy::rewrite::prefix_chain

use std::collections::{HashMap, VecDeque};

use crate::hub::proxy::rewrite::PrefixBlock;

/// Prefix blocks remembered per participant (the least recently routed go first): about 64
/// conversations of 64 blocks, more than a backend's KV cache holds.
pub(crate) const MAX_PREFIX_ENTRIES: usize = 4096;

/// A participant's remembered prefix blocks.
#[derive(Clone, Debug, Default)]
pub(crate) struct PrefixCache {
    /// Block hash → the stamp of its last use.
    stamps: HashMap<u64, u64>,
    /// (hash, stamp) in the order of use; an entry whose stamp is no longer the map's is stale.
    order: VecDeque<(u64, u64)>,
    clock: u64,
}

impl PrefixCache {
    /// Bytes of the head of `chain` found here (0: none).
    pub(crate) fn matched(&self, chain: &[PrefixBlock]) -> u32 {
        let mut bytes = 0;
        for block in chain {
            if !self.stamps.contains_key(&block.hash) {
                break;
            }
            bytes = block.end;
        }
        bytes
    }

    /// Remember `chain` as just sent here. Its head is stamped last, so it is the last to be
    /// forgotten: every block of a chain is only useful while the blocks before it are here.
    pub(crate) fn record(&mut self, chain: &[PrefixBlock]) {
        for block in chain.iter().rev() {
            self.clock += 1;
            self.stamps.insert(block.hash, self.clock);
            self.order.push_back((block.hash, self.clock));
        }
        while self.stamps.len() > MAX_PREFIX_ENTRIES {
            let Some((hash, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.stamps.get(&hash) == Some(&stamp) {
                self.stamps.remove(&hash);
            }
        }
        // Re-used blocks leave stale entries behind: compact when they outnumber live ones.
        if self.order.len() > 2 * MAX_PREFIX_ENTRIES.max(self.stamps.len()) {
            let stamps = &self.stamps;
            self.order.retain(|(h, s)| stamps.get(h) == Some(s));
        }
    }

    /// Blocks remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.stamps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(ids: &[u64]) -> Vec<PrefixBlock> {
        ids.iter()
            .enumerate()
            .map(|(i, &hash)| PrefixBlock {
                hash,
                end: (i as u32 + 1) * 100,
            })
            .collect()
    }

    #[test]
    fn the_longest_head_matches() {
        let mut c = PrefixCache::default();
        assert_eq!(c.matched(&chain(&[1, 2])), 0);
        c.record(&chain(&[1, 2, 3]));
        assert_eq!(c.matched(&chain(&[1, 2, 3, 4])), 300);
        assert_eq!(c.matched(&chain(&[1, 2, 9])), 200);
        assert_eq!(c.matched(&chain(&[9, 2, 3])), 0);
    }

    #[test]
    fn bounded_and_least_recent_first() {
        let mut c = PrefixCache::default();
        let shared = 1u64 << 40;
        for conv in 0..200u64 {
            let ids: Vec<u64> = std::iter::once(shared)
                .chain((0..40).map(|b| conv * 1000 + b + 1))
                .collect();
            c.record(&chain(&ids));
            assert!(c.len() <= MAX_PREFIX_ENTRIES);
            assert!(c.order.len() <= 2 * MAX_PREFIX_ENTRIES + 41);
        }
        // The shared head, used by every request, stays; the oldest conversation went.
        assert_eq!(c.matched(&chain(&[shared])), 100);
        assert_eq!(c.matched(&chain(&[shared, 1])), 100);
        assert_eq!(c.matched(&chain(&[shared, 199_001, 199_002])), 300);
        // A conversation's head outlives its tail.
        let last: Vec<u64> = std::iter::once(shared)
            .chain((0..40).map(|b| 199_000 + b + 1))
            .collect();
        assert_eq!(c.matched(&chain(&last)), 4100);
    }
}
