//! Next-fit allocator of per-partition byte ranges (every allocation spans all partitions).
//!
//! Next fit (search from where the last allocation ended, wrapping around) rather than first
//! fit: a freed tile's memory is handed out again only after the rest of the arena has been
//! cycled through, so a loop that allocates, uses and frees a tile per iteration gets a ring of
//! buffers and its loads run ahead of the compute (multi-buffering) instead of waiting for the
//! previous iteration to finish reading the same bytes.

/// Free byte ranges `[start, end)` of one partition, sorted and coalesced.
#[derive(Debug, Clone)]
pub struct Arena {
    capacity: u64,
    free: Vec<(u64, u64)>,
    /// Where the last allocation ended.
    cursor: u64,
}

impl Arena {
    pub fn new(capacity: u64) -> Self {
        Arena { capacity, free: vec![(0, capacity)], cursor: 0 }
    }

    /// Bytes currently free.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }

    /// The largest free block.
    pub fn largest(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).max().unwrap_or(0)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// A block of `bytes` starting at a multiple of `align`: the first that fits at or after
    /// the cursor, wrapping around.
    pub fn alloc(&mut self, bytes: u64, align: u64) -> Option<u64> {
        let align = align.max(1);
        let n = self.free.len();
        if n == 0 {
            return None;
        }
        let first = self.free.partition_point(|&(_, e)| e <= self.cursor) % n;
        // Blocks from the cursor on, then wrapping around; the block holding the cursor is
        // tried first from the cursor and last from its start.
        for j in 0..=n {
            let i = (first + j) % n;
            let (s, e) = self.free[i];
            let from = if j == 0 { s.max(self.cursor) } else { s };
            let start = from.div_ceil(align) * align;
            if start + bytes <= e {
                self.cursor = start + bytes;
                self.free.remove(i);
                if start + bytes < e {
                    self.free.insert(i, (start + bytes, e));
                }
                if s < start {
                    self.free.insert(i, (s, start));
                }
                return Some(start);
            }
        }
        None
    }

    /// Returns `[start, start + bytes)` to the free list. Freeing what is not allocated is a
    /// caller bug and returns false.
    pub fn release(&mut self, start: u64, bytes: u64) -> bool {
        let end = start + bytes;
        if end > self.capacity || self.free.iter().any(|&(s, e)| s < end && start < e) {
            return false;
        }
        let at = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(at, (start, end));
        // Coalesce with neighbours.
        if at + 1 < self.free.len() && self.free[at].1 == self.free[at + 1].0 {
            self.free[at].1 = self.free[at + 1].1;
            self.free.remove(at + 1);
        }
        if at > 0 && self.free[at - 1].1 == self.free[at].0 {
            self.free[at - 1].1 = self.free[at].1;
            self.free.remove(at);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_fit_alignment_wraparound_and_coalescing() {
        let mut a = Arena::new(1024);
        let x = a.alloc(100, 64).unwrap_or(u64::MAX);
        let y = a.alloc(100, 64).unwrap_or(u64::MAX);
        assert_eq!((x, y), (0, 128));
        assert!(a.release(x, 100));
        assert!(!a.release(x, 100), "double free is refused");
        // Next fit: the freed block at 0 is not reused while space remains ahead.
        assert_eq!(a.alloc(64, 64), Some(256));
        assert_eq!(a.alloc(640, 64), Some(320));
        assert_eq!(a.alloc(64, 64), Some(960));
        // Wraps around to the start once the end is used up.
        assert_eq!(a.alloc(64, 64), Some(0));
        assert!(a.release(0, 64) && a.release(y, 100) && a.release(256, 64) && a.release(320, 640));
        assert!(a.release(960, 64));
        assert_eq!(a.free_bytes(), 1024);
        assert_eq!(a.largest(), 1024);
        assert_eq!(a.alloc(2000, 64), None);
    }
}
