//! How a batch runs through the units kernel: which row each slot holds,
//! how many slots each step runs, where each step's rows sit in the packed
//! buffers, and how a pass is cut into tasks.
//!
//! Rows are sorted by length, longest first (ties by row: one order
//! whatever the input's), into slots `q`; a row that has stopped drops out
//! of the steps that follow, so at run step s the slots still running are
//! `0..active[s]`. The kernel's buffers are *packed* like a PyTorch
//! `PackedSequence`: step s's rows are `offset[s] + q` for `q <
//! active[s]`, so a batch of mixed lengths costs its real steps and the
//! products over all steps (the input projection, the weight gradients)
//! run on exactly the real rows.

use super::super::params::Sequences;
use crate::simd::LANES;

/// Units per block: a task's share of the hidden units, and the width of
/// one gate's slice of a weight panel.
pub(crate) const UNITS: usize = LANES;

/// `n` rounded up to whole blocks of [`UNITS`].
pub(crate) fn padded(n: usize) -> usize {
    n.div_ceil(UNITS) * UNITS
}

/// The layout of one call (see the module docs). Buffers only grow.
pub(crate) struct Plan {
    pub(crate) batch: usize,
    pub(crate) steps: usize,
    pub(crate) reverse: bool,
    /// (B,): the batch row in slot q.
    pub(crate) row: Vec<usize>,
    /// (B,): the steps slot q runs.
    pub(crate) len: Vec<usize>,
    /// (run,): slots running at step s (non-increasing).
    pub(crate) active: Vec<usize>,
    /// (run + 1,): the packed row of step s's slot 0; `offset[run]` is the
    /// number of packed rows.
    pub(crate) offset: Vec<usize>,
}

impl Plan {
    pub(crate) fn new() -> Self {
        Plan {
            batch: 0,
            steps: 0,
            reverse: false,
            row: Vec::new(),
            len: Vec::new(),
            active: Vec::new(),
            offset: Vec::new(),
        }
    }

    /// Lays out `batch` rows of `steps` steps as `seq` says.
    pub(crate) fn make(&mut self, batch: usize, steps: usize, seq: Sequences<'_>) {
        self.batch = batch;
        self.steps = steps;
        self.reverse = seq.reverse;
        self.row.clear();
        self.row.extend(0..batch);
        if seq.lengths.is_some() {
            self.row
                .sort_unstable_by_key(|&b| (std::cmp::Reverse(seq.len(b, steps)), b));
        }
        self.len.clear();
        self.len.extend(self.row.iter().map(|&b| seq.len(b, steps)));
        let run = self.len.first().copied().unwrap_or(0);
        self.active.clear();
        self.offset.clear();
        self.offset.push(0);
        let mut running = batch;
        for s in 0..run {
            while running > 0 && self.len[running - 1] <= s {
                running -= 1;
            }
            self.active.push(running);
            self.offset.push(self.offset[s] + running);
        }
    }

    /// The steps the pass runs: the longest row's.
    pub(crate) fn run(&self) -> usize {
        self.active.len()
    }

    /// Packed rows in all: the real steps of every row.
    pub(crate) fn rows(&self) -> usize {
        *self.offset.last().unwrap_or(&0)
    }

    /// The time step slot q reads and writes at run step s.
    #[inline(always)]
    pub(crate) fn time(&self, q: usize, s: usize) -> usize {
        if self.reverse {
            self.len[q] - 1 - s
        } else {
            s
        }
    }
}

/// How a step's work is cut into tasks: `groups` runs of slots by
/// `blocks` runs of unit blocks; task `g·blocks + j` computes group g's
/// rows for unit block run j. Rows never share a sum and units never share
/// a cell, so the cut changes no result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cut {
    /// Runs of slots: the `batch` slots in `groups` runs whose sizes differ
    /// by at most one.
    pub(crate) groups: usize,
    pub(crate) batch: usize,
    /// Unit blocks per task, and the number of such runs.
    pub(crate) blocks: usize,
    pub(crate) block_run: usize,
}

impl Cut {
    pub(crate) fn tasks(&self) -> usize {
        self.groups * self.blocks
    }

    /// Slots `lo..hi` of group g, of the `active` slots running.
    #[inline(always)]
    pub(crate) fn slots(&self, g: usize, active: usize) -> (usize, usize) {
        let at = |g: usize| (g * self.batch / self.groups).min(active);
        (at(g), at(g + 1))
    }

    /// Unit blocks `lo..hi` of run j, of `nb` blocks.
    #[inline(always)]
    pub(crate) fn unit_blocks(&self, j: usize, nb: usize) -> (usize, usize) {
        ((j * self.block_run).min(nb), ((j + 1) * self.block_run).min(nb))
    }

    /// The cut of a step over `batch` slots and `nb` unit blocks for
    /// `workers` threads: every unit block its own task (so each worker
    /// keeps its blocks' weights), and the batch cut into groups only as
    /// far as needed for about four tasks per worker, no more groups than
    /// whole register tiles of `min_rows` slots. The groups are as equal as
    /// the batch allows: each worker's share of a step is then about the
    /// same work (groups rounded up to whole tiles left B8 as 6 + 2 rows, so
    /// on two threads one did three times the other's rows).
    pub(crate) fn for_step(batch: usize, nb: usize, workers: usize, min_rows: usize) -> Cut {
        let want = 4 * workers;
        let groups = if nb >= want {
            1
        } else {
            want.div_ceil(nb).min(batch.div_ceil(min_rows)).max(1)
        };
        Cut {
            groups,
            batch,
            blocks: nb,
            block_run: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rows_follow_the_lengths() {
        let mut plan = Plan::new();
        let lengths = [2, 5, 1, 5];
        plan.make(
            4,
            5,
            Sequences {
                lengths: Some(&lengths),
                reverse: true,
            },
        );
        assert_eq!(plan.row, [1, 3, 0, 2]);
        assert_eq!(plan.len, [5, 5, 2, 1]);
        assert_eq!(plan.active, [4, 3, 2, 2, 2]);
        assert_eq!(plan.offset, [0, 4, 7, 9, 11, 13]);
        assert_eq!(plan.rows(), 13);
        assert_eq!(plan.time(2, 0), 1);
        assert_eq!(plan.time(0, 1), 3);
        plan.make(3, 4, Sequences::WHOLE);
        assert_eq!(plan.row, [0, 1, 2]);
        assert_eq!(plan.active, [3; 4]);
        assert_eq!(plan.rows(), 12);
        assert_eq!(plan.time(1, 2), 2);
    }

    #[test]
    fn the_step_cut_covers_every_slot_and_block_once() {
        for batch in [1, 2, 5, 16, 33, 64, 256] {
            for nb in [1, 2, 4, 16, 64] {
                for workers in [1, 2, 8, 64] {
                    let cut = Cut::for_step(batch, nb, workers, 6);
                    let mut seen = vec![0; batch * nb];
                    for t in 0..cut.tasks() {
                        let (g, j) = (t / cut.blocks, t % cut.blocks);
                        let (lo, hi) = cut.slots(g, batch);
                        let (b0, b1) = cut.unit_blocks(j, nb);
                        for q in lo..hi {
                            for b in b0..b1 {
                                seen[q * nb + b] += 1;
                            }
                        }
                    }
                    assert!(seen.iter().all(|&n| n == 1), "B{batch} nb{nb} w{workers} {cut:?}");
                }
            }
        }
    }

    /// Each worker's own share of a step (the tasks it claims first) is
    /// about the same work: the slots × unit blocks of the busiest and the
    /// idlest worker differ by at most one task's when every worker has as
    /// many tasks, two when some have one task more.
    #[test]
    fn workers_own_shares_of_a_step_are_balanced() {
        for batch in 1..=64 {
            for nb in [1, 2, 3, 4, 8, 16, 64] {
                for workers in [2, 4, 8, 16, 64] {
                    let cut = Cut::for_step(batch, nb, workers, 6);
                    let workers = workers.min(cut.tasks());
                    let work = |t: usize| {
                        let (lo, hi) = cut.slots(t / cut.blocks, batch);
                        let (b0, b1) = cut.unit_blocks(t % cut.blocks, nb);
                        (hi - lo) * (b1 - b0)
                    };
                    let largest = (0..cut.tasks()).map(work).max().unwrap();
                    let shares: Vec<usize> = (0..workers)
                        .map(|w| {
                            (cut.tasks() * w / workers..cut.tasks() * (w + 1) / workers)
                                .map(work)
                                .sum()
                        })
                        .collect();
                    let (most, least) = (shares.iter().max().unwrap(), shares.iter().min().unwrap());
                    let slack = if cut.tasks().is_multiple_of(workers) { 1 } else { 2 };
                    assert!(
                        most - least <= slack * largest,
                        "B{batch} nb{nb} w{workers} {cut:?}: shares {shares:?}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod task_tests {
    use super::*;
    use crate::threads::team;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// Issue 23's many-core requirement: at B1 H512 and B8 H256 every step
    /// of a pass offers at least 16 independent tasks, whatever the thread
    /// count (so 16 cores and more can share one row's step), counted as
    /// the team runs them.
    #[test]
    fn small_batches_offer_sixteen_tasks_per_step() {
        for (batch, hidden) in [(1, 512), (8, 256)] {
            for workers in [1, 2, 16, 64] {
                let cut = Cut::for_step(batch, padded(hidden) / UNITS, workers, 6);
                let seen = Mutex::new(HashSet::new());
                team::run(workers, 3, cut.tasks(), |p, t| {
                    seen.lock().unwrap().insert((p, t));
                });
                let per_step = seen.into_inner().unwrap().len() / 3;
                assert!(
                    per_step >= 16,
                    "B{batch} H{hidden}, {workers} workers: {per_step} tasks per step"
                );
            }
        }
    }
}
