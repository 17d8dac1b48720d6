//! Moving values between batch-major rows (B, T, F) and lane form (Q, T, F):
//! whole rectangles, rows as a [`Plan`] lays them, and single state slots.

use super::chunks;
use super::plan::{Plan, NONE};
use crate::simd::{Lane, Real, LANES};
use crate::threads::{self, pool};

/// Copies (B, T, F) batch-major rows into lanes (Q, T, F), zero-padding.
pub(super) fn to_lanes<T: Real>(src: &[T], lanes: &mut [Lane<T>], batch: usize, steps: usize, features: usize) {
    debug_assert_eq!(src.len(), batch * steps * features);
    debug_assert_eq!(lanes.len(), chunks(batch) * steps * features);
    let n = steps * features;
    let fill = |q: usize, chunk: &mut [Lane<T>]| {
        let rows = (batch - q * LANES).min(LANES);
        let src = &src[q * LANES * n..][..rows * n];
        // A cache line of each row at a time: the rows sit a multiple of
        // 4 KiB apart at common shapes (T·F·size), so they share L1 sets,
        // and a line left half read was evicted before its rest was used.
        for (e0, block) in (0..n).step_by(LINE).zip(chunk.chunks_mut(LINE)) {
            if rows < LANES {
                block.fill(Lane::splat(T::ZERO)); // the padding lanes
            }
            for l in 0..rows {
                let row = &src[l * n + e0..][..block.len()];
                for (dst, &v) in block.iter_mut().zip(row) {
                    dst[l] = v;
                }
            }
        }
    };
    for_each_chunk(lanes, n, 0, copy_tasks(src.len()), &fill);
}

/// How many threads a layout copy of `elements` values is worth (it is
/// split by chunk: each output is written the same way either way).
fn copy_tasks(elements: usize) -> usize {
    if elements >= COPY_PARALLEL_MIN {
        threads::num_threads()
    } else {
        1
    }
}

/// `f(index, chunk)` for the chunks of `len` elements of `data` (the last
/// may be shorter), indices from `first`, cut into `tasks` parallel runs.
fn for_each_chunk<E: Send, F: Fn(usize, &mut [E]) + Sync>(
    data: &mut [E],
    len: usize,
    first: usize,
    tasks: usize,
    f: &F,
) {
    let n = data.len().div_ceil(len);
    if tasks <= 1 || n <= 1 {
        for (i, chunk) in data.chunks_mut(len).enumerate() {
            f(first + i, chunk);
        }
        return;
    }
    let left_tasks = tasks / 2;
    let at = (n * left_tasks / tasks).clamp(1, n - 1);
    let (a, b) = data.split_at_mut(at * len);
    pool::join(
        || for_each_chunk(a, len, first, left_tasks, f),
        || for_each_chunk(b, len, first + at, tasks - left_tasks, f),
    );
}

/// Values per row the layout copies take at once: 16 is a cache line of
/// f32 and two of f64.
const LINE: usize = 16;

/// A copy this large (H = 128 and up) takes a few hundred µs on one core.
const COPY_PARALLEL_MIN: usize = 1 << 18;

/// Copies lanes (Q, S, F) at steps `first..first+steps` into (B, T, F) rows.
pub(super) fn from_lanes<T: Real>(
    lanes: &[Lane<T>],
    slots: usize,
    first: usize,
    dst: &mut [T],
    batch: usize,
    steps: usize,
    features: usize,
) {
    debug_assert_eq!(dst.len(), batch * steps * features);
    let n = steps * features;
    let spill = |q: usize, rows_q: &mut [T]| {
        let src = &lanes[(q * slots + first) * features..][..n];
        // A cache line of each row at a time (see `to_lanes`): a line is
        // written whole before the next row's.
        for (e0, block) in (0..n).step_by(LINE).zip(src.chunks(LINE)) {
            for (l, row) in rows_q.chunks_exact_mut(n).enumerate() {
                for (dst, lane) in row[e0..][..block.len()].iter_mut().zip(block) {
                    *dst = lane[l];
                }
            }
        }
    };
    for_each_chunk(dst, LANES * n, 0, copy_tasks(dst.len()), &spill);
}

/// Copies (B, T, F) rows into lanes (Q, T, F) as `plan` lays them: run step
/// s of a lane holds its row at time s (or len−1−s reversed), up to the
/// chunk's steps; zero where the lane's row has stopped or is padding.
pub(super) fn gather_to_lanes<T: Real>(src: &[T], lanes: &mut [Lane<T>], plan: &Plan, t_n: usize, features: usize) {
    let n = t_n * features;
    let fill = |q: usize, chunk: &mut [Lane<T>]| {
        let run = plan.steps[q];
        chunk[..run * features].fill(Lane::splat(T::ZERO));
        for l in 0..LANES {
            let lane = q * LANES + l;
            let b = plan.row[lane];
            if b == NONE {
                continue;
            }
            let (row, at) = (&src[b * n..][..n], plan.row_steps(lane, features));
            for s in 0..plan.len[lane] {
                let values = &row[at.at(s)..][..features];
                for (dst, &v) in chunk[s * features..][..features].iter_mut().zip(values) {
                    dst[l] = v;
                }
            }
        }
    };
    for_each_chunk(lanes, n, 0, copy_tasks(src.len()), &fill);
}

/// Copies lanes (Q, S, F) at run steps `first..` into (B, T, F) rows as
/// `plan` lays them: a row's time t ← its lane's run step; zero past the
/// row's length.
pub(super) fn scatter_from_lanes<T: Real>(
    lanes: &[Lane<T>],
    slots: usize,
    first: usize,
    dst: &mut [T],
    plan: &Plan,
    t_n: usize,
    features: usize,
) {
    let n = t_n * features;
    let spill = |b: usize, row: &mut [T]| {
        let lane = plan.lane_of[b];
        let (q, l, len) = (lane / LANES, lane % LANES, plan.len[lane]);
        let at = plan.row_steps(lane, features);
        let src = &lanes[(q * slots + first) * features..];
        for s in 0..len {
            for (dst, v) in row[at.at(s)..][..features]
                .iter_mut()
                .zip(&src[s * features..][..features])
            {
                *dst = v[l];
            }
        }
        row[len * features..].fill(T::ZERO);
    };
    for_each_chunk(dst, n, 0, copy_tasks(dst.len()), &spill);
}

/// (B, F) rows from lanes (Q, S, F) at each lane's own slot `first + len`
/// (the state after its row's last step, with `first` = 0) or at `first`
/// (with `at_len` false).
pub(super) fn rows_from_slot<T: Real>(
    lanes: &[Lane<T>],
    slots: usize,
    dst: &mut [T],
    plan: &Plan,
    features: usize,
    at_len: bool,
) {
    for (b, row) in dst.chunks_exact_mut(features).enumerate() {
        let lane = plan.lane_of[b];
        let (q, l) = (lane / LANES, lane % LANES);
        let slot = if at_len { plan.len[lane] } else { 0 };
        for (dst, v) in row.iter_mut().zip(&lanes[(q * slots + slot) * features..][..features]) {
            *dst = v[l];
        }
    }
}

/// Lanes (Q, S, F) slot 0 from (B, F) rows as `plan` lays them, or zeros.
pub(super) fn slot_from_rows<T: Real>(
    lanes: &mut [Lane<T>],
    slots: usize,
    src: Option<&[T]>,
    plan: &Plan,
    features: usize,
) {
    for chunk in lanes.chunks_exact_mut(slots * features) {
        chunk[..features].fill(Lane::splat(T::ZERO));
    }
    if let Some(src) = src {
        for (b, row) in src.chunks_exact(features).enumerate() {
            let lane = plan.lane_of[b];
            let (q, l) = (lane / LANES, lane % LANES);
            for (dst, &v) in lanes[q * slots * features..][..features].iter_mut().zip(row) {
                dst[l] = v;
            }
        }
    }
}

/// One chunk's slot 0 (of H lanes) from the (B, H) rows of its lanes, or zeros.
pub(super) fn slot_from_rows_chunk<T: Real>(lanes: &mut [Lane<T>], src: Option<&[T]>, rows: &[usize], h: usize) {
    lanes[..h].fill(Lane::splat(T::ZERO));
    if let Some(src) = src {
        for (l, &b) in rows.iter().enumerate() {
            if b != NONE {
                for (dst, &v) in lanes[..h].iter_mut().zip(&src[b * h..][..h]) {
                    dst[l] = v;
                }
            }
        }
    }
}
