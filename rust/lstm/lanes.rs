//! The LSTM kernel for small hidden sizes: the batch in SIMD lanes.
//!
//! With H = 10 a gate row is too short to vectorise and a matrix-product
//! call costs more than its arithmetic. So the batch is cut into chunks of
//! `LANES` rows, and every value (a gate, a cell, an input feature at one
//! step) is held for the whole chunk as one [`Lane`]: the per-step work
//! becomes `4H·(I+H)` broadcast-multiply-adds on lane vectors and one
//! vectorised pass over the gates, with the weights resident in L1.
//!
//! Buffers are chunk-major, `[q][t][feature]` of lanes (q chunk, t step);
//! a batch row b lives in chunk `b / LANES`, lane `b % LANES`. Lanes past
//! the batch are padding: zero inputs and zero gradients, so they add
//! nothing to the weight gradients. The gate gradients dz are kept by
//! blocks of four gate rows instead (`[q][g/4][t][4]`), the order the
//! weight-gradient sweep reads them in, and the weights are packed into
//! panels per call, so every inner loop reads contiguous memory.
//!
//! Chunks are independent, so forward and backward run them in parallel;
//! the weight gradients are then summed over chunks and steps in a fixed
//! order (a sweep blocked like a matrix product: register tiles of 4 gate rows by
//! up to 4 columns, column groups sized to L2). Results do not depend on the thread count.

use super::cell::cell_backward;
use super::params::Dense;
use super::params::{LstmGrads, LstmParams, LstmShape, RowSteps, Sequences};
use super::poison;
use crate::simd::activation::sigmoid_tanh;
use crate::simd::vector::{load_lane, store_lane, sum_regs, tile_lanes, Reg, Vector};
use crate::simd::Real;
use crate::simd::{array, dispatch, prefetch_part, IsaMarker, Lane, LANES};
use crate::threads::{self, pool, team};
use std::sync::Mutex;

/// Number of lane chunks for a batch of `batch` rows.
pub(crate) fn chunks(batch: usize) -> usize {
    batch.div_ceil(LANES)
}

/// The activations forward saves for backward, carved out of a caller's
/// buffer of [`saved_len`] elements (see [`saved_view`]); chunk-major:
struct Saved<X, M> {
    /// (Q, T, I): the input.
    x: X,
    /// (Q, T, 4H): activated gates (i, f, g, o).
    gates: M,
    /// (Q, T+1, H): cell state before step t (slot 0 is c0, slot T is c_n).
    c: M,
    /// (Q, T, H): tanh of the cell state after step t.
    tanh_c: M,
    /// (Q, T+1, H): hidden state before step t (slot 0 is h0, slot T is h_n).
    h: M,
}

type SavedMut<'a, T> = Saved<&'a mut [Lane<T>], &'a mut [Lane<T>]>;
type SavedRef<'a, T> = Saved<&'a [Lane<T>], &'a [Lane<T>]>;

/// Lane vectors (Q, ·) of the saved buffers, in [`Saved`]'s order.
fn saved_parts(s: LstmShape) -> [usize; 5] {
    let (q, t, i, h) = (chunks(s.batch), s.steps, s.input, s.hidden);
    [q * t * i, q * t * 4 * h, q * (t + 1) * h, q * t * h, q * (t + 1) * h]
}

/// Elements of `T` a saved buffer needs for shape `s`: the lane vectors,
/// plus slack so that any `T`-aligned buffer holds them 64-byte aligned.
pub(crate) fn saved_len<T>(s: LstmShape) -> usize {
    LANES * saved_parts(s).iter().sum::<usize>() + ALIGN_SLACK / std::mem::size_of::<T>()
}

/// The alignment of a [`Lane`], in bytes (a cache line).
const ALIGN_SLACK: usize = 64;

/// The 64-byte aligned lane vectors inside `buf` (after at most
/// `ALIGN_SLACK` bytes): as many whole ones as fit.
fn lanes_in<T: Real>(buf: &[T]) -> &[Lane<T>] {
    let skip = skip_to_aligned(buf.as_ptr());
    let rest = &buf[skip.min(buf.len())..];
    // SAFETY: `rest` starts 64-byte aligned (Lane's alignment), holds at
    // least `len · LANES` values of T, and Lane<T> is `repr(C)` over
    // [T; LANES] with T = f32 or f64, for which every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(rest.as_ptr().cast::<Lane<T>>(), rest.len() / LANES) }
}

/// [`lanes_in`], writable.
fn lanes_in_mut<T: Real>(buf: &mut [T]) -> &mut [Lane<T>] {
    let skip = skip_to_aligned(buf.as_ptr()).min(buf.len());
    let rest = &mut buf[skip..];
    let len = rest.len() / LANES;
    // SAFETY: as in `lanes_in`, and `rest` is borrowed uniquely.
    unsafe { std::slice::from_raw_parts_mut(rest.as_mut_ptr().cast::<Lane<T>>(), len) }
}

/// Values of T to skip from `ptr` (T-aligned) to a 64-byte boundary.
fn skip_to_aligned<T>(ptr: *const T) -> usize {
    let align = std::mem::align_of::<Lane<T>>();
    debug_assert_eq!(align, ALIGN_SLACK);
    (align - ptr as usize % align) % align / std::mem::size_of::<T>()
}

/// The saved buffers inside `buf` (of at least [`saved_len`] elements).
fn saved_view<T: Real>(buf: &[T], s: LstmShape) -> SavedRef<'_, T> {
    let lanes = lanes_in(buf);
    let [nx, ng, nc, nt, nh] = saved_parts(s);
    let (x, rest) = lanes.split_at(nx);
    let (gates, rest) = rest.split_at(ng);
    let (c, rest) = rest.split_at(nc);
    let (tanh_c, rest) = rest.split_at(nt);
    Saved {
        x,
        gates,
        c,
        tanh_c,
        h: &rest[..nh],
    }
}

/// [`saved_view`], writable.
fn saved_view_mut<T: Real>(buf: &mut [T], s: LstmShape) -> SavedMut<'_, T> {
    let lanes = lanes_in_mut(buf);
    let [nx, ng, nc, nt, nh] = saved_parts(s);
    let (x, rest) = lanes.split_at_mut(nx);
    let (gates, rest) = rest.split_at_mut(ng);
    let (c, rest) = rest.split_at_mut(nc);
    let (tanh_c, rest) = rest.split_at_mut(nt);
    Saved {
        x,
        gates,
        c,
        tanh_c,
        h: &mut rest[..nh],
    }
}

/// The lanes kernel's scratch: what a call needs only while it runs.
/// Buffers only grow, so a steady-state loop does not allocate.
pub(crate) struct LanesScratch<T> {
    /// (Q, T, H): the incoming gradient by the output.
    d_out: Vec<Lane<T>>,
    /// (Q, 4H/4, T, 4): gradient by the gate pre-activations, gate rows in
    /// blocks of four, each block's steps contiguous: the layout the
    /// weight-gradient sweep reads (see [`dz_index`]).
    dz: Vec<Lane<T>>,
    /// (Q, T, I): gradient by the input.
    dx: Vec<Lane<T>>,
    /// (Q, H): running gradients by h and c; after backward, by h0 and c0.
    dh: Vec<Lane<T>>,
    dc: Vec<Lane<T>>,
    /// [W_ih | W_hh] packed for the forward projection (see `forward`).
    w_fwd: Vec<T>,
    /// [W_ih | W_hh] packed for the back-projection (see `backward_from_lanes`).
    w_bwd: Vec<T>,
    /// (O·H) and (O,): lane-wise sums for a fused dense head's gradients.
    dense_acc_w: Vec<Lane<T>>,
    dense_acc_b: Vec<Lane<T>>,
    /// Packed inputs of the weight-gradient sweep, one per parallel half.
    packs: [Vec<Lane<T>>; 2],
    /// Which row each lane holds, how far each chunk runs.
    plan: Plan,
    /// (Q, H) each: the gradient by (h_n, c_n) in lanes, taken up by each
    /// lane at its row's last step (rows of different lengths).
    dh_final: Vec<Lane<T>>,
    dc_final: Vec<Lane<T>>,
    /// (Q, I + 11H): the streaming forward's one-step buffers.
    stream: Vec<Lane<T>>,
}

impl<T: Real> LanesScratch<T> {
    pub(crate) fn new() -> Self {
        LanesScratch {
            d_out: Vec::new(),
            dz: Vec::new(),
            dx: Vec::new(),
            dh: Vec::new(),
            dc: Vec::new(),
            w_fwd: Vec::new(),
            w_bwd: Vec::new(),
            dense_acc_w: Vec::new(),
            dense_acc_b: Vec::new(),
            packs: [Vec::new(), Vec::new()],
            plan: Plan::new(),
            dh_final: Vec::new(),
            dc_final: Vec::new(),
            stream: Vec::new(),
        }
    }
}

/// Sizes a scratch buffer (see `poison::fit`); `zero` is the lane type's.
fn fit<T: Real>(v: &mut Vec<Lane<T>>, n: usize, _zero: Lane<T>) {
    poison::fit(v, n);
}

/// Copies (B, T, F) batch-major rows into lanes (Q, T, F), zero-padding.
fn to_lanes<T: Real>(src: &[T], lanes: &mut [Lane<T>], batch: usize, steps: usize, features: usize) {
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
fn from_lanes<T: Real>(
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

/// Which batch row each lane holds, and how far each chunk runs. With
/// lengths, rows are sorted longest first, so rows of similar length share
/// a chunk, and a chunk runs only as long as its longest row: compute goes
/// where steps are real. A lane whose row has stopped runs on with zero
/// input; nothing reads what it computes (outputs, final state and
/// gradients are taken at the row's own length).
pub(crate) struct Plan {
    /// (Q·LANES): the batch row in each lane; `NONE` in padding lanes (in
    /// the shortest chunk, which need not be the last: see `fold_chunks`).
    row: Vec<usize>,
    /// (Q·LANES): the steps each lane's row runs (0 past the batch).
    len: Vec<usize>,
    /// (Q,): the steps each chunk runs, its longest row's.
    steps: Vec<usize>,
    /// (B,): the lane (q·LANES + l) of each batch row.
    lane_of: Vec<usize>,
    /// Every row runs all T steps in time order, in lane b: the plain
    /// rectangle, copied by the fast `to_lanes` and `from_lanes`.
    whole: bool,
    reverse: bool,
}

/// The row of a lane past the batch.
const NONE: usize = usize::MAX;

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
    fn make(&mut self, batch: usize, t_n: usize, seq: Sequences<'_>) {
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
    fn row_steps(&self, lane: usize, features: usize) -> RowSteps {
        RowSteps::new(self.len[lane].max(1), features, self.reverse)
    }
}

/// Copies (B, T, F) rows into lanes (Q, T, F) as `plan` lays them: run step
/// s of a lane holds its row at time s (or len−1−s reversed), up to the
/// chunk's steps; zero where the lane's row has stopped or is padding.
fn gather_to_lanes<T: Real>(src: &[T], lanes: &mut [Lane<T>], plan: &Plan, t_n: usize, features: usize) {
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
fn scatter_from_lanes<T: Real>(
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
fn rows_from_slot<T: Real>(lanes: &[Lane<T>], slots: usize, dst: &mut [T], plan: &Plan, features: usize, at_len: bool) {
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
fn slot_from_rows<T: Real>(lanes: &mut [Lane<T>], slots: usize, src: Option<&[T]>, plan: &Plan, features: usize) {
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

/// Forward over x (B, T, I) from (h0, c0) or zeros, each row as `seq`
/// says. Writes out (B, T, H) when asked and (h_n, c_n), each (B, H), and
/// into `saved` (at least [`saved_len`] elements) what backward needs;
/// without `saved`, each chunk keeps only its last step (O(B·H) scratch).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Real>(
    ws: &mut LanesScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: Option<&mut [T]>,
    h_n: &mut [T],
    c_n: &mut [T],
    saved: Option<&mut [T]>,
) {
    let (q_n, t_n, i_n, h_n_) = (chunks(s.batch), s.steps, s.input, s.hidden);
    let (g4, k_n) = (4 * h_n_, s.input + s.hidden);
    ws.plan.make(s.batch, t_n, seq);
    pack_forward_weights(&mut ws.w_fwd, p, i_n, h_n_);
    let Some(saved) = saved else {
        let out = out.expect("a forward pass that saves nothing writes its output");
        return forward_streaming(ws, p.bias, s, x, initial, out, h_n, c_n);
    };
    let plan = &ws.plan;
    let sv = saved_view_mut(saved, s);
    if plan.whole {
        to_lanes(x, sv.x, s.batch, t_n, i_n);
    } else {
        gather_to_lanes(x, sv.x, plan, t_n, i_n);
    }
    // Initial state into slot 0 of each chunk.
    slot_from_rows(sv.h, t_n + 1, initial.map(|(h0, _)| h0), plan, h_n_);
    slot_from_rows(sv.c, t_n + 1, initial.map(|(_, c0)| c0), plan, h_n_);

    let tasks = tasks_for(q_n, plan.steps.iter().sum::<usize>() * g4 * k_n);
    let job = ForwardChunks {
        bufs: ForwardChunk {
            x: sv.x,
            gates: sv.gates,
            c: sv.c,
            tanh_c: sv.tanh_c,
            h: sv.h,
        },
        steps: &plan.steps,
        w_fwd: &ws.w_fwd,
        bias: p.bias,
        q_n,
        t_n,
        i_n,
        h_n: h_n_,
    };
    run_split(job, tasks);

    let sv = saved_view(saved, s);
    if plan.whole {
        if let Some(out) = out {
            from_lanes(sv.h, t_n + 1, 1, out, s.batch, t_n, h_n_);
        }
        from_lanes(sv.h, t_n + 1, t_n, h_n, s.batch, 1, h_n_);
        from_lanes(sv.c, t_n + 1, t_n, c_n, s.batch, 1, h_n_);
    } else {
        if let Some(out) = out {
            scatter_from_lanes(sv.h, t_n + 1, 1, out, plan, t_n, h_n_);
        }
        rows_from_slot(sv.h, t_n + 1, h_n, plan, h_n_, true);
        rows_from_slot(sv.c, t_n + 1, c_n, plan, h_n_, true);
    }
}

/// Forward that saves nothing: each chunk runs its steps on one step's
/// buffers (x, gates, c and h before and after, tanh c), writing each
/// step's output straight to its rows. The arithmetic is the saving
/// forward's, so the results are the same bits.
#[allow(clippy::too_many_arguments)]
fn forward_streaming<T: Real>(
    ws: &mut LanesScratch<T>,
    bias: &[T],
    s: LstmShape,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: &mut [T],
    h_n: &mut [T],
    c_n: &mut [T],
) {
    let (q_n, t_n, i_n, h) = (chunks(s.batch), s.steps, s.input, s.hidden);
    let per_chunk = i_n + 11 * h;
    let zero = Lane::splat(T::ZERO);
    fit(&mut ws.stream, q_n * per_chunk, zero);
    let plan = &ws.plan;
    // Each chunk gets its rows of x and out (a row is in one lane only).
    let mut out_rows: Vec<Option<&mut [T]>> = out.chunks_exact_mut(t_n * h).map(Some).collect();
    let mut chunk_out: Vec<[Option<&mut [T]>; LANES]> = Vec::with_capacity(q_n);
    for q in 0..q_n {
        chunk_out.push(std::array::from_fn(|l| match plan.row[q * LANES + l] {
            NONE => None,
            b => out_rows[b].take(),
        }));
    }
    let job = StreamChunks {
        stream: &mut ws.stream,
        out: &mut chunk_out,
        plan,
        first_chunk: 0,
        x,
        initial,
        w_fwd: &ws.w_fwd,
        bias,
        t_n,
        i_n,
        h_n: h,
    };
    let tasks = tasks_for(q_n, plan.steps.iter().sum::<usize>() * 4 * h * (i_n + h));
    run_split(job, tasks);
    // Each chunk left its rows' final (h, c) in its first two slots.
    for (b, (h_b, c_b)) in h_n.chunks_exact_mut(h).zip(c_n.chunks_exact_mut(h)).enumerate() {
        let lane = plan.lane_of[b];
        let (q, l) = (lane / LANES, lane % LANES);
        let last = &ws.stream[q * per_chunk..][..2 * h];
        for k in 0..h {
            h_b[k] = last[k][l];
            c_b[k] = last[h + k][l];
        }
    }
}

/// The streaming forward of a run of chunks.
struct StreamChunks<'a, 'o, T> {
    /// (Q, I + 11H) lanes: per chunk (h_n, c_n) (2H), then x (I), gates
    /// (4H), c (2H) and h (2H) before and after the step, tanh c (H).
    stream: &'a mut [Lane<T>],
    /// Per chunk, each lane's output row (B's (T, H)).
    out: &'a mut [[Option<&'o mut [T]>; LANES]],
    plan: &'a Plan,
    first_chunk: usize,
    x: &'a [T],
    initial: Option<(&'a [T], &'a [T])>,
    w_fwd: &'a [T],
    bias: &'a [T],
    t_n: usize,
    i_n: usize,
    h_n: usize,
}

impl<T: Real> Split for StreamChunks<'_, '_, T> {
    fn len(&self) -> usize {
        self.out.len()
    }

    fn steps(&self) -> &[usize] {
        &self.plan.steps[self.first_chunk..][..self.out.len()]
    }

    fn split(self, q: usize) -> (Self, Self) {
        let (s0, s1) = self.stream.split_at_mut(q * (self.i_n + 11 * self.h_n));
        let (o0, o1) = self.out.split_at_mut(q);
        let first_chunk = self.first_chunk;
        (
            StreamChunks {
                stream: s0,
                out: o0,
                ..self
            },
            StreamChunks {
                stream: s1,
                out: o1,
                first_chunk: first_chunk + q,
                ..self
            },
        )
    }

    fn run(self) {
        let (t_n, i_n, h) = (self.t_n, self.i_n, self.h_n);
        let plan = self.plan;
        for (k, (buf, out)) in self
            .stream
            .chunks_exact_mut(i_n + 11 * h)
            .zip(self.out.iter_mut())
            .enumerate()
        {
            let q = self.first_chunk + k;
            let (last, buf) = buf.split_at_mut(2 * h);
            let (x, buf) = buf.split_at_mut(i_n);
            let (gates, buf) = buf.split_at_mut(4 * h);
            let (c, buf) = buf.split_at_mut(2 * h);
            let (hs, tanh_c) = buf.split_at_mut(2 * h);
            let lanes = q * LANES..(q + 1) * LANES;
            slot_from_rows_chunk(hs, self.initial.map(|(h0, _)| h0), &plan.row[lanes.clone()], h);
            slot_from_rows_chunk(c, self.initial.map(|(_, c0)| c0), &plan.row[lanes.clone()], h);
            let lens = &plan.len[lanes.clone()];
            let at: [RowSteps; LANES] = std::array::from_fn(|l| plan.row_steps(q * LANES + l, 1));
            for step in 0..plan.steps[q] {
                // x at this step, by lane (zero once a lane's row has stopped).
                for (l, &b) in plan.row[lanes.clone()].iter().enumerate() {
                    let t = if step < lens[l] { at[l].at(step) } else { NONE };
                    for (k, xk) in x.iter_mut().enumerate() {
                        xk[l] = if t == NONE {
                            T::ZERO
                        } else {
                            self.x[(b * t_n + t) * i_n + k]
                        };
                    }
                }
                let mut chunk = ForwardChunk {
                    x: &*x,
                    gates: &mut *gates,
                    c: &mut *c,
                    tanh_c: &mut *tanh_c,
                    h: &mut *hs,
                };
                forward_chunk(&mut chunk, self.w_fwd, self.bias, 1, 1, i_n, h);
                for (l, row) in out.iter_mut().enumerate() {
                    let Some(row) = row else { continue };
                    if step < lens[l] {
                        let at_t = at[l].at(step) * h;
                        for k in 0..h {
                            row[at_t + k] = hs[h + k][l];
                        }
                    }
                    if step + 1 == lens[l] {
                        for k in 0..h {
                            last[k][l] = hs[h + k][l];
                            last[h + k][l] = c[h + k][l];
                        }
                    }
                }
                c.copy_within(h..2 * h, 0);
                hs.copy_within(h..2 * h, 0);
            }
            // Rows past their length output zeros.
            for (l, row) in out.iter_mut().enumerate() {
                if let Some(row) = row {
                    row[lens[l] * h..].fill(T::ZERO);
                }
            }
        }
    }
}

/// One chunk's slot 0 (of H lanes) from the (B, H) rows of its lanes, or zeros.
fn slot_from_rows_chunk<T: Real>(lanes: &mut [Lane<T>], src: Option<&[T]>, rows: &[usize], h: usize) {
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

dispatch!(fn pack_forward_weights<T: Real, S: IsaMarker>(
    w_fwd: &mut Vec<T>,
    p: LstmParams<'_, T>,
    i_n: usize,
    h_n: usize,
) => pack_forward_weights_impl);

/// [W_ih | W_hh] in panels, one per block of gate rows the projection
/// takes at once ([`tile_blocks`]): block g0..g0+n holds, from g0·(I+H),
/// its n weights of input 0, then of input 1, ... so each block's pass
/// reads one contiguous run (a strided walk missed the prefetchers at
/// H = 512). Dispatched like the kernels, so its blocks are theirs.
#[inline(always)]
fn pack_forward_weights_impl<T: Real, S: IsaMarker>(w_fwd: &mut Vec<T>, p: LstmParams<'_, T>, i_n: usize, h_n: usize) {
    let (g4, k_n) = (4 * h_n, i_n + h_n);
    poison::fit(w_fwd, k_n * g4);
    for (g0, n) in tile_blocks::<T, S>(0, g4) {
        let panel = &mut w_fwd[g0 * k_n..][..k_n * n];
        for j in 0..n {
            let g = g0 + j;
            for k in 0..i_n {
                panel[k * n + j] = p.weight_ih[g * i_n + k];
            }
            for k in 0..h_n {
                panel[(i_n + k) * n + j] = p.weight_hh[g * h_n + k];
            }
        }
    }
}

/// The forward work of chunks `0..q_n` (a contiguous run of chunks).
struct ForwardChunks<'a, T> {
    bufs: ForwardChunk<'a, T>,
    /// (Q,): the steps each chunk runs.
    steps: &'a [usize],
    w_fwd: &'a [T],
    bias: &'a [T],
    q_n: usize,
    t_n: usize,
    i_n: usize,
    h_n: usize,
}

impl<T: Real> Split for ForwardChunks<'_, T> {
    fn len(&self) -> usize {
        self.q_n
    }

    fn steps(&self) -> &[usize] {
        self.steps
    }

    fn split(self, q: usize) -> (Self, Self) {
        let (first, rest) = self.bufs.split_at(q, self.t_n, self.i_n, self.h_n);
        let (steps0, steps1) = self.steps.split_at(q);
        let q_n = self.q_n;
        (
            ForwardChunks {
                bufs: first,
                steps: steps0,
                q_n: q,
                ..self
            },
            ForwardChunks {
                bufs: rest,
                steps: steps1,
                q_n: q_n - q,
                ..self
            },
        )
    }

    fn run(self) {
        let (t, i, h) = (self.t_n, self.i_n, self.h_n);
        let mut rest = self.bufs;
        for &run in self.steps {
            let (mut chunk, after) = rest.split_at(1, t, i, h);
            forward_chunk(&mut chunk, self.w_fwd, self.bias, run, t, i, h);
            rest = after;
        }
    }
}

/// Work that can be cut into two contiguous runs of chunks.
trait Split: Send + Sized {
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
fn run_split<W: Split>(work: W, tasks: usize) {
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
const PARALLEL_MIN_LANE_MACS: usize = 1 << 14;

/// How many parallel pieces to cut `q_n` chunks into, for `macs` lane
/// multiply-adds of work: one below the size where a second thread pays.
fn tasks_for(q_n: usize, macs: usize) -> usize {
    if macs < PARALLEL_MIN_LANE_MACS {
        1
    } else {
        threads::num_threads().min(q_n).max(1)
    }
}

/// The forward buffers of one chunk or a run of chunks, chunk-major
/// (layouts as in [`Saved`] and [`LanesScratch`]); per chunk:
pub(crate) struct ForwardChunk<'a, T> {
    /// (T, I)
    x: &'a [Lane<T>],
    /// (T, 4H)
    gates: &'a mut [Lane<T>],
    /// (T+1, H)
    c: &'a mut [Lane<T>],
    /// (T, H)
    tanh_c: &'a mut [Lane<T>],
    /// (T+1, H)
    h: &'a mut [Lane<T>],
}

impl<T> ForwardChunk<'_, T> {
    /// The first q chunks and the rest.
    fn split_at(self, q: usize, t: usize, i: usize, h: usize) -> (Self, Self) {
        let (x0, x1) = self.x.split_at(q * t * i);
        let (g0, g1) = self.gates.split_at_mut(q * t * 4 * h);
        let (c0, c1) = self.c.split_at_mut(q * (t + 1) * h);
        let (tc0, tc1) = self.tanh_c.split_at_mut(q * t * h);
        let (h0, h1) = self.h.split_at_mut(q * (t + 1) * h);
        (
            ForwardChunk {
                x: x0,
                gates: g0,
                c: c0,
                tanh_c: tc0,
                h: h0,
            },
            ForwardChunk {
                x: x1,
                gates: g1,
                c: c1,
                tanh_c: tc1,
                h: h1,
            },
        )
    }
}

dispatch!(fn forward_chunk<T: Real, S: IsaMarker>(
    a: &mut ForwardChunk<'_, T>,
    w_fwd: &[T],
    bias: &[T],
    run: usize,
    t_n: usize,
    i_n: usize,
    h_n: usize,
) => forward_chunk_impl);

/// Forward over the first `run` of the T steps of one chunk.
#[inline(always)]
fn forward_chunk_impl<T: Real, S: IsaMarker>(
    a: &mut ForwardChunk<'_, T>,
    w_fwd: &[T],
    bias: &[T],
    run: usize,
    t_n: usize,
    i_n: usize,
    h_n: usize,
) {
    let g4 = 4 * h_n;
    debug_assert!(run <= t_n);
    for t in 0..run {
        let z = &mut a.gates[t * g4..][..g4];
        project::<T, S>(z, bias, w_fwd, &a.x[t * i_n..][..i_n], &a.h[t * h_n..][..h_n]);
        activate::<T, S>(a, t, h_n);
    }
}

/// Step t of one chunk after the projection: the gate nonlinearities (in
/// place in `gates`) and the cell update into slot t+1 of c and h.
///
/// Software-pipelined by unit: tanh(c_k) is computed in lockstep with the
/// four gates of unit k+1 (`sigmoid_tanh`), so five independent chains run
/// side by side. One unit at a time, each unit's tanh waited alone at the
/// end of a long dependency chain (the seed's forward step was bound by
/// that latency, not by arithmetic). The batch lanes are independent, so
/// the units run one register of lanes at a time, in registers: passing
/// whole lane vectors by value went through the stack.
#[inline(always)]
fn activate<T: Real, S: IsaMarker>(a: &mut ForwardChunk<'_, T>, t: usize, h_n: usize) {
    let z = &mut a.gates[t * 4 * h_n..][..4 * h_n];
    let (c_before, c_after) = a.c.split_at_mut((t + 1) * h_n);
    let c_prev = &c_before[t * h_n..];
    let c_next = &mut c_after[..h_n];
    let h_next = &mut a.h[(t + 1) * h_n..][..h_n];
    let tc_t = &mut a.tanh_c[t * h_n..][..h_n];
    let (zi, rest) = z.split_at_mut(h_n);
    let (zf, rest) = rest.split_at_mut(h_n);
    let (zg, zo) = rest.split_at_mut(h_n);
    for at in (0..LANES).step_by(<Reg<T, S> as Vector<T>>::WIDTH) {
        let part = |v: &Lane<T>| -> Reg<T, S> { Vector::load(&v.0[at..]) };
        let ([i, f, o], [g]) =
            sigmoid_tanh::<T, Reg<T, S>, 3, 1>([part(&zi[0]), part(&zf[0]), part(&zo[0])], [part(&zg[0])]);
        let mut gates = [i, f, g, o];
        // c = f·c_prev + i·g, rounded as `cell_state_lane` rounds it.
        let mut c = f.mul_add(part(&c_prev[0]), i.mul(g));
        for k in 0..h_n {
            let [i, f, g, o] = gates;
            i.store(&mut zi[k].0[at..]);
            f.store(&mut zf[k].0[at..]);
            g.store(&mut zg[k].0[at..]);
            o.store(&mut zo[k].0[at..]);
            c.store(&mut c_next[k].0[at..]);
            let tc = if k + 1 < h_n {
                let n = k + 1;
                let ([ni, nf, no], [ng, tc]) =
                    sigmoid_tanh::<T, Reg<T, S>, 3, 2>([part(&zi[n]), part(&zf[n]), part(&zo[n])], [part(&zg[n]), c]);
                gates = [ni, nf, ng, no];
                tc
            } else {
                sigmoid_tanh::<T, Reg<T, S>, 0, 1>([], [c]).1[0]
            };
            tc.store(&mut tc_t[k].0[at..]);
            o.mul(tc).store(&mut h_next[k].0[at..]);
            if k + 1 < h_n {
                c = gates[1].mul_add(part(&c_prev[k + 1]), gates[0].mul(gates[2]));
            }
        }
    }
}

/// The blocks `first..end` of rows (gate rows in the projection, columns
/// in the back-projection) a register tile takes at once, as (start,
/// width): equal widths of at most [`tile_lanes`] (so a tile keeps enough
/// multiply-add chains in flight: a lone last column doubled the seed's
/// backward step).
#[inline(always)]
fn tile_blocks<T: Real, S: IsaMarker>(first: usize, end: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocks = (end - first).div_ceil(tile_lanes::<T, S>());
    (0..blocks).scan(first, move |k0, b| {
        let width = (end - *k0) / (blocks - b);
        let block = (*k0, width);
        *k0 += width;
        Some(block)
    })
}

/// Calls `$body` with `$n` (1 to 16, at most `tile_lanes`) as the const
/// generic `$N`: a tile's width is a constant inside it, so its
/// accumulators are registers. Widths above the instance's `$max` are
/// never asked for, and the compiler drops their arms.
macro_rules! with_width {
    ($n:expr, $max:expr, |$N:ident| $body:expr) => {
        match $n {
            16 if $max >= 16 => {
                const $N: usize = 16;
                $body
            }
            15 if $max >= 15 => {
                const $N: usize = 15;
                $body
            }
            14 if $max >= 14 => {
                const $N: usize = 14;
                $body
            }
            13 if $max >= 13 => {
                const $N: usize = 13;
                $body
            }
            12 if $max >= 12 => {
                const $N: usize = 12;
                $body
            }
            11 if $max >= 11 => {
                const $N: usize = 11;
                $body
            }
            10 if $max >= 10 => {
                const $N: usize = 10;
                $body
            }
            9 if $max >= 9 => {
                const $N: usize = 9;
                $body
            }
            8 if $max >= 8 => {
                const $N: usize = 8;
                $body
            }
            7 if $max >= 7 => {
                const $N: usize = 7;
                $body
            }
            6 if $max >= 6 => {
                const $N: usize = 6;
                $body
            }
            5 if $max >= 5 => {
                const $N: usize = 5;
                $body
            }
            4 if $max >= 4 => {
                const $N: usize = 4;
                $body
            }
            3 if $max >= 3 => {
                const $N: usize = 3;
                $body
            }
            2 if $max >= 2 => {
                const $N: usize = 2;
                $body
            }
            1 => {
                const $N: usize = 1;
                $body
            }
            n => unreachable!("a tile of {n} lanes"),
        }
    };
}

/// z (4H) = bias + W · [x; h], W packed in panels (`w_p`, see
/// [`pack_forward_weights`]).
#[inline(always)]
fn project<T: Real, S: IsaMarker>(z: &mut [Lane<T>], bias: &[T], w_p: &[T], x: &[Lane<T>], h: &[Lane<T>]) {
    let (g4, k_n) = (z.len(), x.len() + h.len());
    for (g0, n) in tile_blocks::<T, S>(0, g4) {
        let panel = &w_p[g0 * k_n..][..n * k_n];
        with_width!(n, tile_lanes::<T, S>(), |N| {
            let acc = dot_tile::<T, S, N>(Some(&bias[g0..g0 + N]), panel, [x, h].into_iter());
            for (zj, a) in z[g0..g0 + N].iter_mut().zip(&acc) {
                store_lane::<T, Reg<T, S>>(a, zj);
            }
        });
    }
}

/// N lane vectors of sums `init[j] + Σ_i panel[i·N + j] · v_i` (lane-wise),
/// over the lane vectors v_i of `runs` in order, as registers: each v_i is
/// loaded once and each weight broadcast once, for its N rows.
///
/// `N · regs_per_lane` accumulators ([`tile_lanes`]) and one lane of
/// operands fit the registers, so nothing spills.
#[inline(always)]
fn dot_tile<'a, T: Real + 'a, S: IsaMarker, const N: usize>(
    init: Option<&[T]>,
    panel: &[T],
    runs: impl Iterator<Item = &'a [Lane<T>]>,
) -> [<Reg<T, S> as Vector<T>>::Regs; N] {
    let mut acc = array(|j| Reg::<T, S>::splat_regs(init.map_or(T::ZERO, |b| b[j])));
    let (mut weights, _) = panel.as_chunks::<N>();
    for run in runs {
        // Each run's weights as a slice of its own length: a zip of two
        // slices has one trip count, where one with the shared iterator
        // had a second exit mid-loop, and LLVM then shuffled and spilled
        // the accumulators every iteration (44 instructions for 12 FMAs).
        let (w_run, rest) = weights.split_at(run.len().min(weights.len()));
        weights = rest;
        let run = &run[..w_run.len()];
        // Two lane vectors per trip, in order (the same sums): LLVM left
        // the loop over h rolled, 19 instructions for 8 f64 FMAs.
        let (pairs, tail) = run.as_chunks::<2>();
        let (w_pairs, w_tail) = w_run.as_chunks::<2>();
        for (v, w) in pairs.iter().zip(w_pairs) {
            mul_add_lane::<T, S, N>(&mut acc, &v[0], &w[0]);
            mul_add_lane::<T, S, N>(&mut acc, &v[1], &w[1]);
        }
        for (v, w) in tail.iter().zip(w_tail) {
            mul_add_lane::<T, S, N>(&mut acc, v, w);
        }
    }
    acc
}

/// [`dot_tile`] without `init`, over lane vectors in blocks of four (dz_t,
/// read by 4-row blocks): a block's four steps unrolled. As runs of four,
/// each block's bookkeeping (slicing, trip counts, an exit after each
/// vector) took a third of the back-projection's instructions.
#[inline(always)]
fn dot_tile_blocks<'a, T: Real + 'a, S: IsaMarker, const N: usize>(
    panel: &[T],
    blocks: impl Iterator<Item = &'a [Lane<T>; 4]>,
) -> [<Reg<T, S> as Vector<T>>::Regs; N] {
    let mut acc = array(|_| Reg::<T, S>::splat_regs(T::ZERO));
    let (weights, _) = panel.as_chunks::<N>();
    let (weights, _) = weights.as_chunks::<4>();
    for (v, w) in blocks.zip(weights) {
        for (v, w) in v.iter().zip(w) {
            mul_add_lane::<T, S, N>(&mut acc, v, w);
        }
    }
    acc
}

/// `acc[j] += v · w[j]` for the N rows of a tile: v loaded once, each
/// weight broadcast once.
#[inline(always)]
fn mul_add_lane<T: Real, S: IsaMarker, const N: usize>(
    acc: &mut [<Reg<T, S> as Vector<T>>::Regs; N],
    v: &Lane<T>,
    w: &[T; N],
) {
    let v = load_lane::<T, Reg<T, S>>(v);
    for (a, &wj) in acc.iter_mut().zip(w) {
        let wj = Reg::<T, S>::splat(wj);
        for (a, v) in a.as_mut().iter_mut().zip(v.as_ref()) {
            *a = v.mul_add(wj, *a);
        }
    }
}

/// Backward through time over the last forward. `d_out` (B, T, H); `d_final`
/// the gradient by (h_n, c_n) or zeros. Writes the weight gradients, dx
/// (B, T, I) when asked, and dh0, dc0 (B, H).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Real>(
    ws: &mut LanesScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    saved: &[T],
    d_out: &[T],
    d_final: Option<(&[T], &[T])>,
    dx: Option<&mut [T]>,
    grads: LstmGrads<'_, T>,
    dh0: &mut [T],
    dc0: &mut [T],
) {
    fit(
        &mut ws.d_out,
        chunks(s.batch) * s.steps * s.hidden,
        Lane::splat(T::ZERO),
    );
    ws.plan.make(s.batch, s.steps, seq);
    if ws.plan.whole {
        to_lanes(d_out, &mut ws.d_out, s.batch, s.steps, s.hidden);
    } else {
        gather_to_lanes(d_out, &mut ws.d_out, &ws.plan, s.steps, s.hidden);
    }
    backward_from_lanes(ws, p, s, saved_view(saved, s), d_final, dx, grads, dh0, dc0);
}

/// [`backward`] with the gradient by the output already in `ws.d_out`.
#[allow(clippy::too_many_arguments)]
fn backward_from_lanes<T: Real>(
    ws: &mut LanesScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    sv: SavedRef<'_, T>,
    d_final: Option<(&[T], &[T])>,
    dx: Option<&mut [T]>,
    grads: LstmGrads<'_, T>,
    dh0: &mut [T],
    dc0: &mut [T],
) {
    let (q_n, t_n, i_n, h_n) = (chunks(s.batch), s.steps, s.input, s.hidden);
    let (g4, k_n) = (4 * h_n, s.input + s.hidden);
    let zero = Lane::splat(T::ZERO);
    debug_assert_eq!(ws.d_out.len(), q_n * t_n * h_n);
    fit(&mut ws.dz, q_n * t_n * g4, zero);
    fit(&mut ws.dx, q_n * t_n * i_n, zero);
    fit(&mut ws.dh, q_n * h_n, zero);
    fit(&mut ws.dc, q_n * h_n, zero);
    let plan = &ws.plan;
    // Rows of one length start at the last step with the gradient by the
    // final state; rows of several take it up at their own last step (until
    // then a lane's gradients are zero: its stopped steps add nothing).
    let take_up = !plan.whole && d_final.is_some();
    match d_final {
        Some((dh_n, dc_n)) if plan.whole => {
            to_lanes(dh_n, &mut ws.dh, s.batch, 1, h_n);
            to_lanes(dc_n, &mut ws.dc, s.batch, 1, h_n);
        }
        _ => {
            ws.dh.fill(zero);
            ws.dc.fill(zero);
        }
    }
    if let (true, Some((dh_n, dc_n))) = (take_up, d_final) {
        fit(&mut ws.dh_final, q_n * h_n, zero);
        fit(&mut ws.dc_final, q_n * h_n, zero);
        slot_from_rows(&mut ws.dh_final, 1, Some(dh_n), plan, h_n);
        slot_from_rows(&mut ws.dc_final, 1, Some(dc_n), plan, h_n);
    }
    pack_backward_weights(&mut ws.w_bwd, p, if dx.is_some() { 0 } else { i_n }, i_n, h_n);

    let job = BackwardChunks {
        bufs: BackwardChunk {
            gates: sv.gates,
            c: sv.c,
            tanh_c: sv.tanh_c,
            d_out: &ws.d_out,
            dz: &mut ws.dz,
            dx: &mut ws.dx,
            dh: &mut ws.dh,
            dc: &mut ws.dc,
        },
        steps: &plan.steps,
        take_up: take_up.then_some((&plan.len[..], &ws.dh_final[..], &ws.dc_final[..])),
        w: &ws.w_bwd,
        need_dx: dx.is_some(),
        q_n,
        t_n,
        i_n,
        h_n,
    };
    let chunk_steps = ChunkSteps::new(t_n, &plan.steps);
    run_split(job, tasks_for(q_n, chunk_steps.total * g4 * k_n));

    // Weight gradients: sums over every chunk, step and lane; the bias
    // gradient (the sum of dz) rides along with the first columns of W_hh's.
    weight_grads(
        &mut ws.packs,
        &ws.dz,
        sv.x,
        t_n * i_n,
        i_n,
        grads.weight_ih,
        None,
        chunk_steps,
        g4,
        i_n,
    );
    weight_grads(
        &mut ws.packs,
        &ws.dz,
        sv.h,
        (t_n + 1) * h_n,
        h_n,
        grads.weight_hh,
        Some(grads.bias),
        chunk_steps,
        g4,
        h_n,
    );

    if plan.whole {
        if let Some(dx) = dx {
            from_lanes(&ws.dx, t_n, 0, dx, s.batch, t_n, i_n);
        }
        from_lanes(&ws.dh, 1, 0, dh0, s.batch, 1, h_n);
        from_lanes(&ws.dc, 1, 0, dc0, s.batch, 1, h_n);
    } else {
        if let Some(dx) = dx {
            scatter_from_lanes(&ws.dx, t_n, 0, dx, plan, t_n, i_n);
        }
        rows_from_slot(&ws.dh, 1, dh0, plan, h_n, false);
        rows_from_slot(&ws.dc, 1, dc0, plan, h_n, false);
    }
}

dispatch!(fn pack_backward_weights<T: Real, S: IsaMarker>(
    w_bwd: &mut Vec<T>,
    p: LstmParams<'_, T>,
    first: usize,
    i_n: usize,
    h_n: usize,
) => pack_backward_weights_impl);

/// [W_ih | W_hh] in panels, one per block of columns `first..` the
/// back-projection takes at once ([`tile_blocks`]): block k0..k0+n holds,
/// from k0·4H, the n weights of gate row 0, then of row 1, ... so each
/// block's pass reads one contiguous run.
#[inline(always)]
fn pack_backward_weights_impl<T: Real, S: IsaMarker>(
    w_bwd: &mut Vec<T>,
    p: LstmParams<'_, T>,
    first: usize,
    i_n: usize,
    h_n: usize,
) {
    let (g4, k_n) = (4 * h_n, i_n + h_n);
    poison::fit(w_bwd, g4 * k_n);
    for (k0, n) in tile_blocks::<T, S>(first, k_n) {
        let panel = &mut w_bwd[k0 * g4..][..g4 * n];
        for g in 0..g4 {
            for j in 0..n {
                let k = k0 + j;
                panel[g * n + j] = if k < i_n {
                    p.weight_ih[g * i_n + k]
                } else {
                    p.weight_hh[g * h_n + k - i_n]
                };
            }
        }
    }
}

/// The steps the chunks run, each chunk's laid out T apart: "chunk-steps"
/// counted chunk after chunk, `total` in all, for the weight-gradient sweep.
#[derive(Clone, Copy)]
pub(crate) struct ChunkSteps<'a> {
    t_n: usize,
    steps: &'a [usize],
    total: usize,
    /// Every chunk runs all T steps (then a chunk-step is q·T + t).
    full: bool,
}

impl<'a> ChunkSteps<'a> {
    fn new(t_n: usize, steps: &'a [usize]) -> Self {
        ChunkSteps {
            t_n,
            steps,
            total: steps.iter().sum(),
            full: steps.iter().all(|&n| n == t_n),
        }
    }

    /// The chunk and step of chunk-step `i`.
    #[inline]
    fn locate(&self, mut i: usize) -> (usize, usize) {
        if self.full {
            return (i / self.t_n, i % self.t_n);
        }
        for (q, &n) in self.steps.iter().enumerate() {
            if i < n {
                return (q, i);
            }
            i -= n;
        }
        unreachable!("chunk-step past the last chunk's steps")
    }
}

/// The backward work of a contiguous run of chunks.
struct BackwardChunks<'a, T> {
    bufs: BackwardChunk<'a, T>,
    /// (Q,): the steps each chunk runs.
    steps: &'a [usize],
    /// With rows of several lengths: each lane's length (Q·LANES) and the
    /// gradients by the final state in lanes (Q, H) each, taken up by a
    /// lane at its last step.
    take_up: TakeUp<'a, T>,
    w: &'a [T],
    /// Whether to compute dx (the seed network has no use for it).
    need_dx: bool,
    q_n: usize,
    t_n: usize,
    i_n: usize,
    h_n: usize,
}

impl<T: Real> Split for BackwardChunks<'_, T> {
    fn len(&self) -> usize {
        self.q_n
    }

    fn steps(&self) -> &[usize] {
        self.steps
    }

    fn split(self, q: usize) -> (Self, Self) {
        let (first, rest) = self.bufs.split_at(q, self.t_n, self.i_n, self.h_n);
        let (steps0, steps1) = self.steps.split_at(q);
        let h = self.h_n;
        let (take0, take1) = match self.take_up {
            Some((lens, dh, dc)) => {
                let (l0, l1) = lens.split_at(q * LANES);
                let (dh0, dh1) = dh.split_at(q * h);
                let (dc0, dc1) = dc.split_at(q * h);
                (Some((l0, dh0, dc0)), Some((l1, dh1, dc1)))
            }
            None => (None, None),
        };
        let q_n = self.q_n;
        (
            BackwardChunks {
                bufs: first,
                steps: steps0,
                take_up: take0,
                q_n: q,
                ..self
            },
            BackwardChunks {
                bufs: rest,
                steps: steps1,
                take_up: take1,
                q_n: q_n - q,
                ..self
            },
        )
    }

    fn run(self) {
        let (t, i, h) = (self.t_n, self.i_n, self.h_n);
        let mut rest = self.bufs;
        for (q, &run) in self.steps.iter().enumerate() {
            let (mut chunk, after) = rest.split_at(1, t, i, h);
            let take_up = self
                .take_up
                .map(|(lens, dh, dc)| (&lens[q * LANES..][..LANES], &dh[q * h..][..h], &dc[q * h..][..h]));
            backward_chunk(&mut chunk, self.w, self.need_dx, take_up, run, t, i, h);
            rest = after;
        }
    }
}

/// The backward buffers of one chunk or a run of chunks, chunk-major
/// (layouts as in [`Saved`] and [`LanesScratch`]); per chunk:
pub(crate) struct BackwardChunk<'a, T> {
    /// (T, 4H), activated
    gates: &'a [Lane<T>],
    /// (T+1, H)
    c: &'a [Lane<T>],
    /// (T, H)
    tanh_c: &'a [Lane<T>],
    /// (T, H)
    d_out: &'a [Lane<T>],
    /// (4H/4, T, 4)
    dz: &'a mut [Lane<T>],
    /// (T, I)
    dx: &'a mut [Lane<T>],
    /// (H,) each: the running gradients by h and c.
    dh: &'a mut [Lane<T>],
    dc: &'a mut [Lane<T>],
}

impl<T> BackwardChunk<'_, T> {
    /// The first q chunks and the rest.
    fn split_at(self, q: usize, t: usize, i: usize, h: usize) -> (Self, Self) {
        let (gates0, gates1) = self.gates.split_at(q * t * 4 * h);
        let (c0, c1) = self.c.split_at(q * (t + 1) * h);
        let (tc0, tc1) = self.tanh_c.split_at(q * t * h);
        let (do0, do1) = self.d_out.split_at(q * t * h);
        let (dz0, dz1) = self.dz.split_at_mut(q * t * 4 * h);
        let (dx0, dx1) = self.dx.split_at_mut(q * t * i);
        let (dh0, dh1) = self.dh.split_at_mut(q * h);
        let (dc0, dc1) = self.dc.split_at_mut(q * h);
        let part = |gates, c, tanh_c, d_out, dz, dx, dh, dc| BackwardChunk {
            gates,
            c,
            tanh_c,
            d_out,
            dz,
            dx,
            dh,
            dc,
        };
        (
            part(gates0, c0, tc0, do0, dz0, dx0, dh0, dc0),
            part(gates1, c1, tc1, do1, dz1, dx1, dh1, dc1),
        )
    }
}

dispatch!(fn backward_chunk<T: Real, S: IsaMarker>(
    b: &mut BackwardChunk<'_, T>,
    w: &[T],
    need_dx: bool,
    take_up: TakeUp<'_, T>,
    run: usize,
    t_n: usize,
    i_n: usize,
    h_n: usize,
) => backward_chunk_impl);

/// A chunk's lane lengths (LANES) and gradients by the final state (H
/// lanes each), for rows of several lengths.
type TakeUp<'a, T> = Option<(&'a [usize], &'a [Lane<T>], &'a [Lane<T>])>;

/// Backward over the first `run` of the T steps of one chunk, last first.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_chunk_impl<T: Real, S: IsaMarker>(
    b: &mut BackwardChunk<'_, T>,
    w: &[T],
    need_dx: bool,
    take_up: TakeUp<'_, T>,
    run: usize,
    t_n: usize,
    i_n: usize,
    h_n: usize,
) {
    let BackwardChunk {
        gates,
        c,
        tanh_c,
        d_out,
        dz,
        dx,
        dh,
        dc,
    } = b;
    let g4 = 4 * h_n;
    for t in (0..run).rev() {
        if let Some((lens, dh_n, dc_n)) = take_up {
            // A lane whose row ends here starts from the final-state gradient.
            for (l, _) in lens.iter().enumerate().filter(|&(_, &n)| n == t + 1) {
                for k in 0..h_n {
                    dh[k][l] = dh_n[k][l];
                    dc[k][l] = dc_n[k][l];
                }
            }
        }
        let gate = &gates[t * g4..][..g4];
        let c_prev = &c[t * h_n..][..h_n];
        let tc = &tanh_c[t * h_n..][..h_n];
        let d_out_t = &d_out[t * h_n..][..h_n];
        for k in 0..h_n {
            // Copies into locals, which do not alias, so the lane loop vectorises.
            let (gi, gf, gg, go) = (gate[k], gate[h_n + k], gate[2 * h_n + k], gate[3 * h_n + k]);
            let (d_out_k, dh_k, tc_k, c_prev_k, dc_k) = (d_out_t[k], dh[k], tc[k], c_prev[k], dc[k]);
            let mut dzi = Lane::splat(T::ZERO);
            let (mut dzf, mut dzg, mut dzo, mut dc_prev) = (dzi, dzi, dzi, dzi);
            for l in 0..LANES {
                let gates = [gi[l], gf[l], gg[l], go[l]];
                let dh_l = d_out_k[l] + dh_k[l];
                let ([di, df, dg, d_o], dc_l) = cell_backward::<T, S>(gates, tc_k[l], c_prev_k[l], dh_l, dc_k[l]);
                dzi[l] = di;
                dzf[l] = df;
                dzg[l] = dg;
                dzo[l] = d_o;
                dc_prev[l] = dc_l;
            }
            dz[dz_index(k, t, t_n)] = dzi;
            dz[dz_index(h_n + k, t, t_n)] = dzf;
            dz[dz_index(2 * h_n + k, t, t_n)] = dzg;
            dz[dz_index(3 * h_n + k, t, t_n)] = dzo;
            dc[k] = dc_prev;
        }
        // [dx_t; dh_{t-1}] = [W_ih | W_hh]ᵀ · dz_t (dh only, unless dx is
        // wanted), a block of columns at a time; dz_t is read in gate order,
        // four rows at a time (its layout, see `dz_index`).
        let dx_t = &mut dx[t * i_n..][..i_n];
        for (k0, n) in tile_blocks::<T, S>(if need_dx { 0 } else { i_n }, i_n + h_n) {
            let panel = &w[k0 * g4..][..g4 * n];
            // Block blk of dz_t is block blk·T + t of the chunk's dz (a
            // `step_by` cost 17 instructions a block, this 5).
            let dz_t = dz.as_chunks::<4>().0.chunks_exact(t_n).map(|steps| &steps[t]);
            with_width!(n, tile_lanes::<T, S>(), |N| {
                let acc = dot_tile_blocks::<T, S, N>(panel, dz_t);
                for (j, a) in acc.iter().enumerate() {
                    let k = k0 + j;
                    let out = if k < i_n { &mut dx_t[k] } else { &mut dh[k - i_n] };
                    store_lane::<T, Reg<T, S>>(a, out);
                }
            });
        }
    }
}

/// Where gate row g at step t sits in one chunk's dz (4H/4, T, 4).
#[inline(always)]
fn dz_index(g: usize, t: usize, t_n: usize) -> usize {
    ((g / 4) * t_n + t) * 4 + g % 4
}

/// out (G, K) = Σ over chunks q, steps t and lanes of dz[q][t][g] · v[q][t][k],
/// and `bias` (G) = Σ dz[q][t][g] when given. `dz` is (Q, G/4, T, 4); `v`
/// has chunk stride `v_qs` and step stride `v_ts`.
#[allow(clippy::too_many_arguments)]
fn weight_grads<T: Real>(
    packs: &mut [Vec<Lane<T>>; 2],
    dz: &[Lane<T>],
    v: &[Lane<T>],
    v_qs: usize,
    v_ts: usize,
    out: &mut [T],
    bias: Option<&mut [T]>,
    cs: ChunkSteps<'_>,
    g_n: usize,
    k_n: usize,
) {
    debug_assert_eq!(out.len(), g_n * k_n);
    for pack in packs.iter_mut() {
        poison::fit(pack, STEP_BLOCK * k_n);
    }
    let [pack0, pack1] = packs;
    let parallel = threads::num_threads() > 1 && cs.total * g_n * k_n >= PARALLEL_MIN_LANE_MACS;
    if parallel {
        // Two halves of whole 4-row blocks; each output is summed the same way.
        let mid = (g_n / 8) * 4;
        let (top, bottom) = out.split_at_mut(mid * k_n);
        let (bias_top, bias_bottom) = match bias {
            Some(b) => {
                let (t, b) = b.split_at_mut(mid);
                (Some(t), Some(b))
            }
            None => (None, None),
        };
        pool::join(
            || weight_grads_rows(pack0, dz, v, v_qs, v_ts, top, bias_top, 0, cs, g_n, k_n),
            || weight_grads_rows(pack1, dz, v, v_qs, v_ts, bottom, bias_bottom, mid, cs, g_n, k_n),
        );
    } else {
        weight_grads_rows(pack0, dz, v, v_qs, v_ts, out, bias, 0, cs, g_n, k_n);
    }
}

dispatch!(fn weight_grads_rows<T: Real, S: IsaMarker>(
    pack_v: &mut [Lane<T>],
    dz: &[Lane<T>],
    v: &[Lane<T>],
    v_qs: usize,
    v_ts: usize,
    rows: &mut [T],
    bias: Option<&mut [T]>,
    g0: usize,
    cs: ChunkSteps<'_>,
    g_n: usize,
    k_n: usize,
) => weight_grads_rows_impl);

/// Gate rows g0.. of the weight gradient (`rows` holds a multiple of 4 rows),
/// and of the bias gradient when given (with each block's first tile).
///
/// Steps go in blocks; for each block the inputs `v` are copied column by
/// column into `pack_v`, so the tiles read contiguous memory (read in
/// place, rows a power-of-two stride apart all fall in the same L1 sets and
/// evict each other). `dz` is already laid out by 4-row blocks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weight_grads_rows_impl<T: Real, S: IsaMarker>(
    pack_v: &mut [Lane<T>],
    dz: &[Lane<T>],
    v: &[Lane<T>],
    v_qs: usize,
    v_ts: usize,
    rows: &mut [T],
    mut bias: Option<&mut [T]>,
    g0: usize,
    cs: ChunkSteps<'_>,
    g_n: usize,
    k_n: usize,
) {
    let s_n = cs.total;
    for s0 in (0..s_n).step_by(STEP_BLOCK) {
        let sb = STEP_BLOCK.min(s_n - s0);
        // pack_v[k·sb + s] = v at step s0 + s, feature k.
        for s in 0..sb {
            let (q, t) = cs.locate(s0 + s);
            let row = &v[q * v_qs + t * v_ts..][..k_n];
            for (k, &lane) in row.iter().enumerate() {
                pack_v[k * sb + s] = lane;
            }
        }
        // Blocked like a matrix product, so both operands come from L2:
        // row blocks in groups whose dz (read from memory once per step
        // block) stays in L2 while every column group passes over it, and
        // columns in groups whose packed inputs stay in L2 while the row
        // blocks of a group pass over them. (Unblocked, the 2 MB pack of
        // H = 512 came from L3 once per row block; with column groups
        // alone, dz, 52 MB, came from memory once per column group.)
        let lane_bytes = std::mem::size_of::<Lane<T>>();
        let group = (PACK_L2_BYTES / (sb * lane_bytes)).max(4) / 4 * 4;
        let row_group = (DZ_L2_BYTES / (4 * sb * lane_bytes)).max(1);
        for (rg, row_blocks) in rows.chunks_mut(row_group * 4 * k_n).enumerate() {
            for k_first in (0..k_n).step_by(group) {
                let k_end = (k_first + group).min(k_n);
                for (blk, block) in row_blocks.chunks_exact_mut(4 * k_n).enumerate() {
                    let tile = Tile {
                        dz,
                        block: g0 / 4 + rg * row_group + blk,
                        g_n,
                        cs,
                        s0,
                        sb,
                        v: &pack_v[..k_n * sb],
                        first: s0 == 0,
                    };
                    if let (Some(bias), 0) = (bias.as_deref_mut(), k_first) {
                        let row0 = (rg * row_group + blk) * 4;
                        bias_block::<T, S>(&tile, &mut bias[row0..row0 + 4]);
                    }
                    let mut k0 = k_first;
                    // Larger than L2, the next row block's dz comes from
                    // memory on the first column group: fetch it while this
                    // block's tiles run, a part per tile (H128 f64 backward
                    // 24.6 -> 23.8 ms; at the seed's size it only cost).
                    let next = Tile {
                        block: tile.block + 1,
                        ..tile
                    };
                    let prefetch = k_first == 0 && next.block < g_n / 4 && std::mem::size_of_val(dz) > L2_BYTES;
                    let tiles = (k_end - k_first).div_ceil(4);
                    while k0 < k_end {
                        if prefetch {
                            for (_, dz) in next.runs() {
                                prefetch_part(dz, (k0 - k_first) / 4, tiles);
                            }
                        }
                        // 4 x 4 tiles, accumulators one register wide: 16
                        // of them. With 16 registers and FMA (AVX2), 4 x 3:
                        // 12 accumulators, 3 columns and one dz register,
                        // 19 instructions and 7 loads for 12 FMAs where 4 x 2
                        // took 14 and 6 for 8 (the sweep's instructions at
                        // H128 f64: 12% fewer); without FMA a product needs a
                        // register of its own, so 4 x 2. A remainder of 2 to
                        // 4 columns as 4 x 2 (the seed's 10 = 3 + 3 + 2 + 2):
                        // half the dz loads of two 4 x 1.
                        let n = match k_end - k0 {
                            4.. if S::REGISTERS >= 32 => 4,
                            5.. if S::FMA => 3,
                            3 if S::FMA => 3,
                            2.. => 2,
                            _ => 1,
                        };
                        match n {
                            4 => outer_block::<T, S, 4>(&tile, block, k0, k_n),
                            3 => outer_block::<T, S, 3>(&tile, block, k0, k_n),
                            2 => outer_block::<T, S, 2>(&tile, block, k0, k_n),
                            _ => outer_block::<T, S, 1>(&tile, block, k0, k_n),
                        }
                        k0 += n;
                    }
                }
            }
        }
    }
}

/// Bytes of packed inputs one column group of the weight-gradient sweep
/// may span, and of dz one row group may span: together most of a 1 MB L2.
const PACK_L2_BYTES: usize = 384 * 1024;
const DZ_L2_BYTES: usize = 256 * 1024;
/// The L2 size these are cut from; a larger dz comes from memory.
const L2_BYTES: usize = 1024 * 1024;

/// One step block (chunk-steps s0..s0+sb) of the weight-gradient sweep for
/// the 4-row block `block`: `dz` (Q, G/4, T, 4) is read in place, one run
/// of contiguous steps per chunk; `v` (K, sb) lanes is the packed input.
struct Tile<'a, T> {
    dz: &'a [Lane<T>],
    block: usize,
    g_n: usize,
    cs: ChunkSteps<'a>,
    s0: usize,
    sb: usize,
    v: &'a [Lane<T>],
    /// The first block overwrites the output; later ones add to it.
    first: bool,
}

impl<'a, T> Tile<'a, T> {
    /// The tile's chunk-steps as runs of contiguous steps within one chunk:
    /// (the run's first step, counted from s0; its dz, 4 lanes a step).
    fn runs(&self) -> impl Iterator<Item = (usize, &'a [Lane<T>])> + '_ {
        let (mut s, end) = (self.s0, self.s0 + self.sb);
        std::iter::from_fn(move || {
            if s >= end {
                return None;
            }
            let (q, t) = self.cs.locate(s);
            let t_n = self.cs.t_n;
            let run = (self.cs.steps[q] - t).min(end - s);
            let dz = &self.dz[q * self.g_n * t_n + (self.block * t_n + t) * 4..][..4 * run];
            let first = s - self.s0;
            s += run;
            Some((first, dz))
        })
    }
}

/// Chunk-steps (each LANES batch rows at one step) per block of the weight
/// gradient sweep.
const STEP_BLOCK: usize = 64;

/// The 4 rows' sums of dz over the tile's steps (the bias gradient), into
/// `bias`: overwritten by the first step block, added to by later ones. The
/// block's dz was just read by its first tile, so it comes from L1.
#[inline(always)]
fn bias_block<T: Real, S: IsaMarker>(tile: &Tile<'_, T>, bias: &mut [T]) {
    let mut sums = [Reg::<T, S>::splat_regs(T::ZERO); 4];
    for (_, dz) in tile.runs() {
        for a in dz.chunks_exact(4) {
            for (sum, a) in sums.iter_mut().zip(a) {
                let a = load_lane::<T, Reg<T, S>>(a);
                for (s, a) in sum.as_mut().iter_mut().zip(a.as_ref()) {
                    *s = s.add(*a);
                }
            }
        }
    }
    for (out, sum) in bias.iter_mut().zip(sums) {
        let sum = sum_regs::<T, Reg<T, S>>(sum);
        *out = if tile.first { sum } else { *out + sum };
    }
}

/// A 4 x N block of the weight gradient, accumulated in registers, then
/// summed across the register once.
///
/// Each accumulator is one register, and takes every register of a lane
/// vector in turn (a lane of f32 is two AVX2 registers, of f64 four): 4 x 4
/// tiles (16 accumulators, 5 operands) fit 32 registers, 4 x 3 (12 and 4)
/// fit 16.
#[inline(always)]
fn outer_block<T: Real, S: IsaMarker, const N: usize>(tile: &Tile<'_, T>, rows: &mut [T], k0: usize, k_n: usize) {
    type V<T, S> = Reg<T, S>;
    let sb = tile.sb;
    let width = V::<T, S>::WIDTH;
    let columns: [&[Lane<T>]; N] = array(|m| &tile.v[(k0 + m) * sb..][..sb]);
    let mut acc = [[V::<T, S>::splat(T::ZERO); N]; 4];
    // One run of steps per chunk the block spans.
    for (first, dz) in tile.runs() {
        let cols: [&[Lane<T>]; N] = array(|m| &columns[m][first..][..dz.len() / 4]);
        for (i, a) in dz.chunks_exact(4).enumerate() {
            for from in (0..LANES).step_by(width) {
                // The N column registers, then one dz register at a time:
                // N + 1 operands (4 + 1 held all four dz registers, and
                // 4 x 3 spilled its accumulators).
                let b: [V<T, S>; N] = array(|m| V::<T, S>::load(&cols[m][i].0[from..]));
                for (acc, a) in acc.iter_mut().zip(a) {
                    let a = V::<T, S>::load(&a.0[from..]);
                    for (acc, b) in acc.iter_mut().zip(&b) {
                        *acc = a.mul_add(*b, *acc);
                    }
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        for (m, a) in acc.iter().enumerate() {
            let sum = a.sum();
            let out = &mut rows[j * k_n + k0 + m];
            *out = if tile.first { sum } else { *out + sum };
        }
    }
}

/// pred (B, T, O) = h·Wᵀ + b for every step of the last forward.
/// `saved` is that forward's.
pub(crate) fn dense_forward<T: Real>(saved: &[T], s: LstmShape, head: Dense<'_, T>, pred: &mut [T]) {
    dense_forward_kernel(
        saved_view(saved, s).h,
        s.batch,
        s.steps,
        s.hidden,
        head.weight,
        head.bias,
        pred,
    );
}

dispatch!(fn dense_forward_kernel<T: Real, S: IsaMarker>(
    h: &[Lane<T>],
    batch: usize,
    t_n: usize,
    h_n: usize,
    weight: &[T],
    bias: &[T],
    pred: &mut [T],
) => dense_forward_impl);

#[inline(always)]
fn dense_forward_impl<T: Real, S: IsaMarker>(
    h: &[Lane<T>],
    batch: usize,
    t_n: usize,
    h_n: usize,
    weight: &[T],
    bias: &[T],
    pred: &mut [T],
) {
    let o_n = bias.len();
    debug_assert_eq!(pred.len(), batch * t_n * o_n);
    let head = Dense { weight, bias };
    let s = LstmShape {
        batch,
        steps: t_n,
        input: 0,
        hidden: h_n,
    };
    for (q, h_q) in h.chunks_exact((t_n + 1) * h_n).enumerate() {
        let rows = (s.batch - q * LANES).min(LANES);
        for t in 0..t_n {
            let h_t = &h_q[(t + 1) * h_n..][..h_n];
            for o in 0..o_n {
                let y = dense_row::<T, S>(h_t, &head.weight[o * h_n..][..h_n], head.bias[o]);
                for l in 0..rows {
                    pred[((q * LANES + l) * t_n + t) * o_n + o] = y[l];
                }
            }
        }
    }
}

/// b + Σ_k w[k]·h[k], lane by lane.
#[inline(always)]
fn dense_row<T: Real, S: IsaMarker>(h: &[Lane<T>], w: &[T], b: T) -> Lane<T> {
    let acc = dot_tile::<T, S, 1>(Some(&[b]), w, std::iter::once(h));
    let mut y = Lane::splat(T::ZERO);
    store_lane::<T, Reg<T, S>>(&acc[0], &mut y);
    y
}

/// Backward of [`dense_forward`] then of the LSTM: from d_pred (B, T, O),
/// the dense layer's gradients `d_weight` (O, H) and `d_bias` (O,), then
/// BPTT as [`backward`] with d_out = d_pred·W (formed in lanes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_backward<T: Real>(
    ws: &mut LanesScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    saved: &[T],
    head: Dense<'_, T>,
    d_pred: &[T],
    d_weight: &mut [T],
    d_bias: &mut [T],
    grads: LstmGrads<'_, T>,
    dh0: &mut [T],
    dc0: &mut [T],
) {
    let (q_n, t_n, h_n) = (chunks(s.batch), s.steps, s.hidden);
    let zero = Lane::splat(T::ZERO);
    fit(&mut ws.d_out, q_n * t_n * h_n, zero);
    fit(&mut ws.dense_acc_w, head.weight.len(), zero);
    fit(&mut ws.dense_acc_b, head.bias.len(), zero);
    let sv = saved_view(saved, s);
    ws.plan.make(s.batch, s.steps, Sequences::WHOLE);
    dense_grads(
        sv.h,
        &mut ws.d_out,
        (&mut ws.dense_acc_w, &mut ws.dense_acc_b),
        s.batch,
        t_n,
        h_n,
        head.weight,
        head.bias,
        d_pred,
        d_weight,
        d_bias,
    );
    backward_from_lanes(ws, p, s, sv, None, None, grads, dh0, dc0);
}

dispatch!(fn dense_grads<T: Real, S: IsaMarker>(
    h: &[Lane<T>],
    d_out: &mut [Lane<T>],
    acc: (&mut [Lane<T>], &mut [Lane<T>]),
    batch: usize,
    t_n: usize,
    h_n: usize,
    weight: &[T],
    bias: &[T],
    d_pred: &[T],
    d_weight: &mut [T],
    d_bias: &mut [T],
) => dense_grads_impl);

/// The dense head's gradients, and d_out (lanes) = d_pred·W.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dense_grads_impl<T: Real, S: IsaMarker>(
    h: &[Lane<T>],
    d_out: &mut [Lane<T>],
    (acc_w, acc_b): (&mut [Lane<T>], &mut [Lane<T>]),
    batch: usize,
    t_n: usize,
    h_n: usize,
    weight: &[T],
    bias: &[T],
    d_pred: &[T],
    d_weight: &mut [T],
    d_bias: &mut [T],
) {
    let head = Dense { weight, bias };
    let s = LstmShape {
        batch,
        steps: t_n,
        input: 0,
        hidden: h_n,
    };
    let o_n = head.bias.len();
    let zero = Lane::splat(T::ZERO);
    // Lane-wise sums for the dense gradients; summed across lanes at the end.
    acc_w.fill(zero);
    acc_b.fill(zero);
    for (q, (h_q, d_q)) in h
        .chunks_exact((t_n + 1) * h_n)
        .zip(d_out.chunks_exact_mut(t_n * h_n))
        .enumerate()
    {
        let rows = (s.batch - q * LANES).min(LANES);
        d_q.fill(zero);
        for t in 0..t_n {
            let h_t = &h_q[(t + 1) * h_n..][..h_n];
            let d_t = &mut d_q[t * h_n..][..h_n];
            for o in 0..o_n {
                let mut dp = zero;
                for l in 0..rows {
                    dp[l] = d_pred[((q * LANES + l) * t_n + t) * o_n + o];
                }
                let w_o = &head.weight[o * h_n..][..h_n];
                dense_grad_row::<T, S>(dp, h_t, w_o, d_t, &mut acc_w[o * h_n..][..h_n]);
                for l in 0..LANES {
                    acc_b[o][l] += dp[l];
                }
            }
        }
    }
    for (dw, acc) in d_weight.iter_mut().zip(acc_w.iter()) {
        *dw = sum_regs::<T, Reg<T, S>>(load_lane::<T, Reg<T, S>>(acc));
    }
    for (db, acc) in d_bias.iter_mut().zip(acc_b.iter()) {
        *db = sum_regs::<T, Reg<T, S>>(load_lane::<T, Reg<T, S>>(acc));
    }
}

/// For one output o at one step: d_h += dp·w_o, and the lane-wise sums
/// of dp·h for the weight gradient.
#[inline(always)]
fn dense_grad_row<T: Real, S: IsaMarker>(
    dp: Lane<T>,
    h: &[Lane<T>],
    w: &[T],
    d_h: &mut [Lane<T>],
    acc_w: &mut [Lane<T>],
) {
    type V<T, S> = Reg<T, S>;
    let dp = load_lane::<T, V<T, S>>(&dp);
    for (((hk, &wk), dk), ak) in h.iter().zip(w).zip(d_h).zip(acc_w) {
        let (hr, wk) = (load_lane::<T, V<T, S>>(hk), V::<T, S>::splat(wk));
        let (mut dr, mut ar) = (load_lane::<T, V<T, S>>(dk), load_lane::<T, V<T, S>>(ak));
        for (p, &dp) in dp.as_ref().iter().enumerate() {
            dr.as_mut()[p] = dp.mul_add(wk, dr.as_ref()[p]);
            ar.as_mut()[p] = dp.mul_add(hr.as_ref()[p], ar.as_ref()[p]);
        }
        store_lane::<T, V<T, S>>(&dr, dk);
        store_lane::<T, V<T, S>>(&ar, ak);
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
