//! Which batch row each lane holds and how far each chunk runs ([`Plan`]),
//! and cutting a run of chunks into balanced parallel tasks ([`run_split`]).

use super::chunks;
use crate::lstm::params::{RowSteps, Sequences};
use crate::simd::LANES;
use crate::threads::{self, team};
use std::sync::Mutex;

/// Which batch row each lane holds, and how far each chunk runs. With
/// lengths, rows are sorted longest first, so rows of similar length share
/// a chunk, and a chunk runs only as long as its longest row: compute goes
/// where steps are real. A lane whose row has stopped runs on with zero
/// input; nothing reads what it computes (outputs, final state and
/// gradients are taken at the row's own length).
pub(crate) struct Plan {
    /// (Q·LANES): the batch row in each lane; `NONE` in padding lanes (in
    /// the shortest chunk, which need not be the last: see `fold_chunks`).
    pub(super) row: Vec<usize>,
    /// (Q·LANES): the steps each lane's row runs (0 past the batch).
    pub(super) len: Vec<usize>,
    /// (Q,): the steps each chunk runs, its longest row's.
    pub(super) steps: Vec<usize>,
    /// (B,): the lane (q·LANES + l) of each batch row.
    pub(super) lane_of: Vec<usize>,
    /// Every row runs all T steps in time order, in lane b: the plain
    /// rectangle, copied by the fast `to_lanes` and `from_lanes`.
    pub(super) whole: bool,
    pub(super) reverse: bool,
}

/// The row of a lane past the batch.
pub(super) const NONE: usize = usize::MAX;

impl Plan {
    pub(crate) fn new() -> Self {
        Plan {
            row: Vec::new(),
            len: Vec::new(),
            steps: Vec::new(),
            lane_of: Vec::new(),
            whole: true,
            reverse: false,
        }
    }

    /// Lays `batch` rows of `t_n` steps into lanes as `seq` says.
    pub(super) fn make(&mut self, batch: usize, t_n: usize, seq: Sequences<'_>) {
        let q_n = chunks(batch);
        self.whole = seq.is_whole(t_n);
        self.reverse = seq.reverse;
        // Whole rows are copied by `to_lanes` and `from_lanes`, row b in lane
        // b: lengths that are all T must not reorder them.
        let sort = seq.lengths.is_some() && !self.whole;
        self.row.clear();
        self.row.extend(0..batch);
        if sort {
            // Longest first, ties by row: one order whatever the input order.
            self.row
                .sort_unstable_by_key(|&b| (std::cmp::Reverse(seq.len(b, t_n)), b));
        }
        self.row.resize(q_n * LANES, NONE);
        if sort {
            self.fold_chunks();
        }
        self.len.clear();
        self.len
            .extend(self.row.iter().map(|&b| if b == NONE { 0 } else { seq.len(b, t_n) }));
        self.steps.clear();
        self.steps.extend(
            self.len
                .chunks_exact(LANES)
                .map(|l| l.iter().copied().max().unwrap_or(0)),
        );
        self.lane_of.resize(batch, 0);
        for (lane, &b) in self.row.iter().enumerate() {
            if b != NONE {
                self.lane_of[b] = lane;
            }
        }
    }

    /// Reorders the chunks of rows sorted longest first as longest,
    /// shortest, second longest, second shortest, ...: neighbours then
    /// balance, so [`run_split`]'s contiguous runs of chunks cost about the
    /// same (sorted, the first half of the chunks holds most of the steps).
    /// `len` (rebuilt from `row` next) holds the new order meanwhile, so
    /// nothing is allocated once the plan has its size.
    fn fold_chunks(&mut self) {
        let q_n = self.row.len() / LANES;
        let order = (0..q_n).map(|k| if k % 2 == 0 { k / 2 } else { q_n - 1 - k / 2 });
        self.len.clear();
        for q in order {
            self.len.extend_from_slice(&self.row[q * LANES..][..LANES]);
        }
        std::mem::swap(&mut self.row, &mut self.len);
    }

    /// Where run step s of lane `lane` reads and writes in its row's (T, F)
    /// values.
    pub(super) fn row_steps(&self, lane: usize, features: usize) -> RowSteps {
        RowSteps::new(self.len[lane].max(1), features, self.reverse)
    }
}

/// Work that can be cut into two contiguous runs of chunks.
pub(super) trait Split: Send + Sized {
    fn len(&self) -> usize;
    /// (len,): the steps each chunk runs, its cost.
    fn steps(&self) -> &[usize];
    fn split(self, at: usize) -> (Self, Self);
    fn run(self);
}

/// Runs `work` as `tasks` pieces in parallel (on this thread alone if 1):
/// cut once into balanced runs of chunks, then one team pass whose tasks
/// are the runs (`threads::team`: on the host's OpenMP team when there is
/// one, every run claimable by any worker).
pub(super) fn run_split<W: Split>(work: W, tasks: usize) {
    let tasks = tasks.min(team::MAX_WORKERS);
    if tasks <= 1 || work.len() <= 1 {
        return work.run();
    }
    let parts: [Mutex<Option<W>>; team::MAX_WORKERS] = std::array::from_fn(|_| Mutex::new(None));
    let mut made = 0;
    cut_into(work, tasks, &parts, &mut made);
    team::run(made, 1, made, |_, i| {
        if let Some(part) = parts[i].lock().unwrap_or_else(|e| e.into_inner()).take() {
            part.run();
        }
    });
}

/// Cuts `work` into `tasks` balanced runs (fewer if it has fewer chunks),
/// stored in `parts` from `made` on.
fn cut_into<W: Split>(work: W, tasks: usize, parts: &[Mutex<Option<W>>], made: &mut usize) {
    if tasks <= 1 || work.len() <= 1 {
        *parts[*made].lock().unwrap_or_else(|e| e.into_inner()) = Some(work);
        *made += 1;
        return;
    }
    let left = tasks / 2;
    let at = balanced_cut(work.steps(), left, tasks - left);
    let (a, b) = work.split(at);
    cut_into(a, left, parts, made);
    cut_into(b, tasks - left, parts, made);
}

/// Where to cut chunks costing `steps` (at least two) into a left run for
/// `left` tasks and a right run for `right`: the cut whose slower side per
/// task is fastest (the first such). Equal costs cut in proportion.
fn balanced_cut(steps: &[usize], left: usize, right: usize) -> usize {
    let total: usize = steps.iter().sum();
    let mut prefix = 0;
    let mut best = (usize::MAX, 1);
    for (at, &n) in steps.iter().enumerate().take(steps.len() - 1) {
        prefix += n;
        // max(prefix / left, rest / right), scaled by left · right.
        let slower = (prefix * right).max((total - prefix) * left);
        if slower < best.0 {
            best = (slower, at + 1);
        }
    }
    best.1
}

/// Below this many lane multiply-adds a pass runs on the calling thread:
/// handing half to a worker costs more than it saves. The seed network's
/// passes (35 000 and 64 000) run on two: its train step on AVX2 took
/// 121 µs against 167 µs on one thread (f64 226 against 361 µs; median of
/// five interleaved runs of `examples/profile_step seed <dtype> step`,
/// 2-core AMD EPYC). The helper is still spinning from the previous pass.
pub(super) const PARALLEL_MIN_LANE_MACS: usize = 1 << 14;

/// How many parallel pieces to cut `q_n` chunks into, for `macs` lane
/// multiply-adds of work: one below the size where a second thread pays.
pub(super) fn tasks_for(q_n: usize, macs: usize) -> usize {
    if macs < PARALLEL_MIN_LANE_MACS {
        1
    } else {
        threads::num_threads().min(q_n).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_chunks_cut_in_proportion() {
        for n in 2..12 {
            for tasks in 2..6 {
                let left = tasks / 2;
                let steps = vec![7; n];
                let at = balanced_cut(&steps, left, tasks - left);
                // Within a chunk of the proportional cut, and exactly half for two.
                assert!((at * tasks).abs_diff(n * left) <= tasks, "n {n} tasks {tasks}: {at}");
                if tasks == 2 {
                    assert_eq!(at, n / 2);
                }
            }
        }
    }

    #[test]
    fn uneven_chunks_cut_where_both_sides_balance() {
        assert_eq!(balanced_cut(&[98, 25, 74, 49], 1, 1), 2);
        assert_eq!(balanced_cut(&[98, 74, 49, 25], 1, 1), 1);
        assert_eq!(balanced_cut(&[100, 1, 1, 1], 1, 1), 1);
        assert_eq!(balanced_cut(&[1, 1, 1, 100], 1, 1), 3);
    }

    /// The plan of `n` rows of lengths 1..=n over n steps.
    fn plan_for_lengths_1_to(n: usize) -> Plan {
        let lengths: Vec<usize> = (1..=n).collect();
        let mut plan = Plan::new();
        let seq = Sequences {
            lengths: Some(&lengths),
            reverse: false,
        };
        plan.make(n, n, seq);
        plan
    }

    #[test]
    fn lengths_fold_chunks_longest_beside_shortest() {
        let plan = plan_for_lengths_1_to(64);
        // Sorted longest first, the chunks run 64, 48, 32, 16 steps.
        assert_eq!(plan.steps, [64, 16, 48, 32]);
        for (b, &lane) in plan.lane_of.iter().enumerate() {
            assert_eq!(plan.row[lane], b);
            assert_eq!(plan.len[lane], b + 1);
        }
    }

    #[test]
    fn padding_lanes_may_sit_in_a_middle_chunk() {
        // 50 rows: the shortest chunk holds 2 rows and 14 padding lanes.
        let plan = plan_for_lengths_1_to(50);
        assert_eq!(plan.steps, [50, 2, 34, 18]);
        assert_eq!(plan.row.iter().filter(|&&b| b == NONE).count(), 14);
        for (b, &lane) in plan.lane_of.iter().enumerate() {
            assert_eq!((plan.row[lane], plan.len[lane]), (b, b + 1));
        }
    }
}
