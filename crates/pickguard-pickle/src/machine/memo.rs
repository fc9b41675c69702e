//! The memo, bounded as the limits say.

use super::*;

/// The memo: a dense array for the small keys picklers write (as CPython
/// keeps it), a map for sparse large keys an attacker may choose, and the
/// count of distinct keys that MEMOIZE uses.
#[derive(Default)]
pub(super) struct Memo {
    dense: Vec<Option<NodeId>>,
    sparse: HashMap<u64, NodeId>,
    len: usize,
}

impl Memo {
    const DENSE_LIMIT: u64 = 1 << 22;

    /// Store; false when a new key would exceed `max`.
    pub(super) fn put(&mut self, key: u64, id: NodeId, max: usize) -> bool {
        if key < Self::DENSE_LIMIT {
            let k = key as usize;
            if k >= self.dense.len() {
                if self.len >= max {
                    return false;
                }
                self.dense.resize(
                    (k + 1)
                        .max(self.dense.len() * 2)
                        .min(Self::DENSE_LIMIT as usize),
                    None,
                );
            }
            if self.dense[k].is_none() {
                if self.len >= max {
                    return false;
                }
                self.len += 1;
            }
            self.dense[k] = Some(id);
        } else {
            if !self.sparse.contains_key(&key) {
                if self.len >= max {
                    return false;
                }
                self.len += 1;
            }
            self.sparse.insert(key, id);
        }
        true
    }

    pub(super) fn get(&self, key: u64) -> Option<NodeId> {
        if key < Self::DENSE_LIMIT {
            self.dense.get(key as usize).copied().flatten()
        } else {
            self.sparse.get(&key).copied()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}
