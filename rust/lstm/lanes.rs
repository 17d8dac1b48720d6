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
//! order (a sweep blocked like a matrix product: 4 x 4 register tiles,
//! column groups sized to L2). Results do not depend on the thread count.

use super::cell::{cell_backward, cell_state_lane};
use super::params::Dense;
use super::params::{LstmGrads, LstmParams, LstmShape};
use crate::simd::activation::sigmoid_lanes;
use crate::simd::Real;
use crate::simd::{dispatch, prefetch_part, IsaMarker, Lane, LANES};
use crate::threads::{self, pool};

/// Number of lane chunks for a batch of `batch` rows.
pub(crate) fn chunks(batch: usize) -> usize {
    batch.div_ceil(LANES)
}

/// Working memory of the lanes kernel; buffers only grow.
pub(crate) struct LanesWorkspace<T> {
    /// (Q, T, I): the input.
    x: Vec<Lane<T>>,
    /// (Q, T, 4H): activated gates (i, f, g, o).
    gates: Vec<Lane<T>>,
    /// (Q, T+1, H): cell state before step t (slot 0 is c0, slot T is c_n).
    c: Vec<Lane<T>>,
    /// (Q, T, H): tanh of the cell state after step t.
    tanh_c: Vec<Lane<T>>,
    /// (Q, T+1, H): hidden state before step t (slot 0 is h0, slot T is h_n).
    h: Vec<Lane<T>>,
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
}

impl<T: Real> LanesWorkspace<T> {
    pub(crate) fn new() -> Self {
        LanesWorkspace {
            x: Vec::new(),
            gates: Vec::new(),
            c: Vec::new(),
            tanh_c: Vec::new(),
            h: Vec::new(),
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
        }
    }
}

fn fit<T: Copy>(v: &mut Vec<T>, n: usize, zero: T) {
    v.resize(n, zero);
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

/// Forward over x (B, T, I) from (h0, c0) or zeros. Writes out (B, T, H)
/// when asked and (h_n, c_n), each (B, H), and keeps what backward needs.
pub(crate) fn forward<T: Real>(
    ws: &mut LanesWorkspace<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: Option<&mut [T]>,
    h_n: &mut [T],
    c_n: &mut [T],
) {
    let (q_n, t_n, i_n, h_n_) = (chunks(s.batch), s.steps, s.input, s.hidden);
    let (g4, k_n) = (4 * h_n_, s.input + s.hidden);
    let zero = Lane::splat(T::ZERO);
    fit(&mut ws.x, q_n * t_n * i_n, zero);
    fit(&mut ws.gates, q_n * t_n * g4, zero);
    fit(&mut ws.c, q_n * (t_n + 1) * h_n_, zero);
    fit(&mut ws.tanh_c, q_n * t_n * h_n_, zero);
    fit(&mut ws.h, q_n * (t_n + 1) * h_n_, zero);
    to_lanes(x, &mut ws.x, s.batch, t_n, i_n);

    // Initial state into slot 0 of each chunk.
    for (q, (h_q, c_q)) in
        ws.h.chunks_exact_mut((t_n + 1) * h_n_)
            .zip(ws.c.chunks_exact_mut((t_n + 1) * h_n_))
            .enumerate()
    {
        h_q[..h_n_].fill(zero);
        c_q[..h_n_].fill(zero);
        if let Some((h0, c0)) = initial {
            for l in 0..(s.batch - q * LANES).min(LANES) {
                let b = q * LANES + l;
                for k in 0..h_n_ {
                    h_q[k][l] = h0[b * h_n_ + k];
                    c_q[k][l] = c0[b * h_n_ + k];
                }
            }
        }
    }

    // [W_ih | W_hh] in panels, one per block of gate rows the projection
    // takes at once: block g0..g0+n holds, from g0·(I+H), its n weights of
    // input 0, then of input 1, ... so each block's pass reads one
    // contiguous run (a strided walk missed the prefetchers at H = 512).
    fit(&mut ws.w_fwd, k_n * g4, T::ZERO);
    let mut g0 = 0;
    while g0 < g4 {
        let n = gate_block_width::<T>(g0, g4);
        let panel = &mut ws.w_fwd[g0 * k_n..][..k_n * n];
        for j in 0..n {
            let g = g0 + j;
            for k in 0..i_n {
                panel[k * n + j] = p.weight_ih[g * i_n + k];
            }
            for k in 0..h_n_ {
                panel[(i_n + k) * n + j] = p.weight_hh[g * h_n_ + k];
            }
        }
        g0 += n;
    }

    let tasks = tasks_for(q_n, q_n * t_n * g4 * k_n);
    let job = ForwardChunks {
        bufs: ForwardChunk {
            x: &ws.x,
            gates: &mut ws.gates,
            c: &mut ws.c,
            tanh_c: &mut ws.tanh_c,
            h: &mut ws.h,
        },
        w_fwd: &ws.w_fwd,
        bias: p.bias,
        q_n,
        t_n,
        i_n,
        h_n: h_n_,
    };
    run_split(job, tasks);

    if let Some(out) = out {
        from_lanes(&ws.h, t_n + 1, 1, out, s.batch, t_n, h_n_);
    }
    from_lanes(&ws.h, t_n + 1, t_n, h_n, s.batch, 1, h_n_);
    from_lanes(&ws.c, t_n + 1, t_n, c_n, s.batch, 1, h_n_);
}

/// The forward work of chunks `0..q_n` (a contiguous run of chunks).
struct ForwardChunks<'a, T> {
    bufs: ForwardChunk<'a, T>,
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

    fn split(self, q: usize) -> (Self, Self) {
        let (first, rest) = self.bufs.split_at(q, self.t_n, self.i_n, self.h_n);
        let q_n = self.q_n;
        (
            ForwardChunks {
                bufs: first,
                q_n: q,
                ..self
            },
            ForwardChunks {
                bufs: rest,
                q_n: q_n - q,
                ..self
            },
        )
    }

    fn run(self) {
        let (t, i, h) = (self.t_n, self.i_n, self.h_n);
        let mut rest = self.bufs;
        for _ in 0..self.q_n {
            let (mut chunk, after) = rest.split_at(1, t, i, h);
            forward_chunk(&mut chunk, self.w_fwd, self.bias, t, i, h);
            rest = after;
        }
    }
}

/// Work that can be cut into two contiguous runs of chunks.
trait Split: Send + Sized {
    fn len(&self) -> usize;
    fn split(self, at: usize) -> (Self, Self);
    fn run(self);
}

/// Runs `work` as `tasks` pieces in parallel (on this thread alone if 1).
fn run_split<W: Split>(work: W, tasks: usize) {
    let n = work.len();
    if tasks <= 1 || n <= 1 {
        work.run();
    } else {
        let left_tasks = tasks / 2;
        let at = (n * left_tasks / tasks).clamp(1, n - 1);
        let (a, b) = work.split(at);
        pool::join(|| run_split(a, left_tasks), || run_split(b, tasks - left_tasks));
    }
}

/// Below this many lane multiply-adds a pass runs on the calling thread:
/// waking a worker costs more than it saves (the seed network, 35 000 per
/// pass, measured faster on one thread; `cargo bench`).
const PARALLEL_MIN_LANE_MACS: usize = 1 << 18;

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
/// (layouts as in [`LanesWorkspace`]); per chunk:
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
    t_n: usize,
    i_n: usize,
    h_n: usize,
) => forward_chunk_impl);

/// Forward over the T steps of one chunk.
#[inline(always)]
fn forward_chunk_impl<T: Real, S: IsaMarker>(
    a: &mut ForwardChunk<'_, T>,
    w_fwd: &[T],
    bias: &[T],
    t_n: usize,
    i_n: usize,
    h_n: usize,
) {
    let g4 = 4 * h_n;
    for t in 0..t_n {
        let z = &mut a.gates[t * g4..][..g4];
        project(z, bias, w_fwd, &a.x[t * i_n..][..i_n], &a.h[t * h_n..][..h_n]);
        activate::<T, S>(a, t, h_n);
    }
}

/// Step t of one chunk after the projection: the gate nonlinearities (in
/// place in `gates`) and the cell update into slot t+1 of c and h.
///
/// Software-pipelined by unit: tanh(c_k) is computed in lockstep with the
/// four gates of unit k+1 (`sigmoid_lanes`, tanh(x) = 2σ(2x) − 1), so five
/// independent chains run side by side. One unit at a time, each unit's
/// tanh waited alone at the end of a long dependency chain (the seed's
/// forward step was bound by that latency, not by arithmetic).
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
    let two = T::ONE + T::ONE;
    let doubled = |v: Lane<T>| Lane(v.0.map(|x| x + x));
    // 2σ − 1: tanh from the σ of a doubled input.
    let tanh_of = |s: Lane<T>| Lane(s.0.map(|x| two.mul_add(x, -T::ONE)));
    let [i, f, g, o] = sigmoid_lanes::<T, S, 4>([zi[0], zf[0], doubled(zg[0]), zo[0]]);
    let mut gates = [i, f, tanh_of(g), o];
    let mut c = cell_state_lane(gates[0], gates[1], gates[2], c_prev[0]);
    for k in 0..h_n {
        let [i, f, g, o] = gates;
        (zi[k], zf[k], zg[k], zo[k]) = (i, f, g, o);
        c_next[k] = c;
        let tc = if k + 1 < h_n {
            let n = k + 1;
            let [ni, nf, ng, no, tc] = sigmoid_lanes::<T, S, 5>([zi[n], zf[n], doubled(zg[n]), zo[n], doubled(c)]);
            gates = [ni, nf, tanh_of(ng), no];
            tanh_of(tc)
        } else {
            tanh_of(sigmoid_lanes::<T, S, 1>([doubled(c)])[0])
        };
        tc_t[k] = tc;
        h_next[k] = Lane(std::array::from_fn(|l| o[l] * tc[l]));
        if k + 1 < h_n {
            c = cell_state_lane(gates[0], gates[1], gates[2], c_prev[k + 1]);
        }
    }
}

/// How many gate rows the projection takes at once from row g0: 8 in f32,
/// 4 in f64 (what fits the registers), 4 at the end (4H is a multiple of 4).
#[inline(always)]
fn gate_block_width<T: Real>(g0: usize, g4: usize) -> usize {
    if std::mem::size_of::<T>() == 4 && g0 + 8 <= g4 {
        8
    } else {
        4
    }
}

/// z (4H) = bias + W · [x; h], W packed in panels (`w_p`, see `forward`).
#[inline(always)]
fn project<T: Real>(z: &mut [Lane<T>], bias: &[T], w_p: &[T], x: &[Lane<T>], h: &[Lane<T>]) {
    let (g4, k_n) = (z.len(), x.len() + h.len());
    let mut g0 = 0;
    while g0 < g4 {
        let panel = &w_p[g0 * k_n..];
        if gate_block_width::<T>(g0, g4) == 8 {
            project_block::<T, 8>(&mut z[g0..g0 + 8], &bias[g0..g0 + 8], panel, x, h);
            g0 += 8;
        } else {
            project_block::<T, 4>(&mut z[g0..g0 + 4], &bias[g0..g0 + 4], panel, x, h);
            g0 += 4;
        }
    }
}

/// N gate rows at once, so N independent multiply-add chains run in flight.
#[inline(always)]
fn project_block<T: Real, const N: usize>(z: &mut [Lane<T>], bias: &[T], panel: &[T], x: &[Lane<T>], h: &[Lane<T>]) {
    let mut acc: [Lane<T>; N] = std::array::from_fn(|j| Lane::splat(bias[j]));
    // Input k's weights times its lanes; x then h in two loops, so no
    // per-k branch keeps the weight loads from folding into the FMAs.
    let mut add_input = |k: usize, v: Lane<T>| {
        let w: [T; N] = panel[k * N..][..N].try_into().unwrap();
        // Lanes outermost: the compiler vectorises along them (contiguous)
        // and unrolls the short loop over j.
        for l in 0..LANES {
            for j in 0..N {
                acc[j][l] = v[l].mul_add(w[j], acc[j][l]);
            }
        }
    };
    for (k, &v) in x.iter().enumerate() {
        add_input(k, v);
    }
    for (k, &v) in h.iter().enumerate() {
        add_input(x.len() + k, v);
    }
    z.copy_from_slice(&acc);
}

/// Backward through time over the last forward. `d_out` (B, T, H); `d_final`
/// the gradient by (h_n, c_n) or zeros. Writes the weight gradients, dx
/// (B, T, I) when asked, and dh0, dc0 (B, H).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Real>(
    ws: &mut LanesWorkspace<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
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
    to_lanes(d_out, &mut ws.d_out, s.batch, s.steps, s.hidden);
    backward_from_lanes(ws, p, s, d_final, dx, grads, dh0, dc0);
}

/// [`backward`] with the gradient by the output already in `ws.d_out`.
#[allow(clippy::too_many_arguments)]
fn backward_from_lanes<T: Real>(
    ws: &mut LanesWorkspace<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
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
    match d_final {
        Some((dh_n, dc_n)) => {
            to_lanes(dh_n, &mut ws.dh, s.batch, 1, h_n);
            to_lanes(dc_n, &mut ws.dc, s.batch, 1, h_n);
        }
        None => {
            ws.dh.fill(zero);
            ws.dc.fill(zero);
        }
    }
    // [W_ih | W_hh] in panels, one per block of columns the back-projection
    // takes at once: block k0..k0+n holds, from k0·4H, the n weights of gate
    // row 0, then of row 1, ... so each block's pass reads one contiguous run.
    fit(&mut ws.w_bwd, g4 * k_n, T::ZERO);
    for (k0, n) in column_blocks(if dx.is_some() { 0 } else { i_n }, k_n) {
        let panel = &mut ws.w_bwd[k0 * g4..][..g4 * n];
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

    let job = BackwardChunks {
        bufs: BackwardChunk {
            gates: &ws.gates,
            c: &ws.c,
            tanh_c: &ws.tanh_c,
            d_out: &ws.d_out,
            dz: &mut ws.dz,
            dx: &mut ws.dx,
            dh: &mut ws.dh,
            dc: &mut ws.dc,
        },
        w: &ws.w_bwd,
        need_dx: dx.is_some(),
        q_n,
        t_n,
        i_n,
        h_n,
    };
    run_split(job, tasks_for(q_n, q_n * t_n * g4 * k_n));

    // Weight gradients: sums over every chunk, step and lane; the bias
    // gradient (the sum of dz) rides along with the first columns of W_hh's.
    weight_grads(
        &mut ws.packs,
        &ws.dz,
        &ws.x,
        t_n * i_n,
        i_n,
        grads.weight_ih,
        None,
        q_n,
        t_n,
        g4,
        i_n,
    );
    weight_grads(
        &mut ws.packs,
        &ws.dz,
        &ws.h,
        (t_n + 1) * h_n,
        h_n,
        grads.weight_hh,
        Some(grads.bias),
        q_n,
        t_n,
        g4,
        h_n,
    );

    if let Some(dx) = dx {
        from_lanes(&ws.dx, t_n, 0, dx, s.batch, t_n, i_n);
    }
    from_lanes(&ws.dh, 1, 0, dh0, s.batch, 1, h_n);
    from_lanes(&ws.dc, 1, 0, dc0, s.batch, 1, h_n);
}

/// The backward work of a contiguous run of chunks.
struct BackwardChunks<'a, T> {
    bufs: BackwardChunk<'a, T>,
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

    fn split(self, q: usize) -> (Self, Self) {
        let (first, rest) = self.bufs.split_at(q, self.t_n, self.i_n, self.h_n);
        let q_n = self.q_n;
        (
            BackwardChunks {
                bufs: first,
                q_n: q,
                ..self
            },
            BackwardChunks {
                bufs: rest,
                q_n: q_n - q,
                ..self
            },
        )
    }

    fn run(self) {
        let (t, i, h) = (self.t_n, self.i_n, self.h_n);
        let mut rest = self.bufs;
        for _ in 0..self.q_n {
            let (mut chunk, after) = rest.split_at(1, t, i, h);
            backward_chunk(&mut chunk, self.w, self.need_dx, t, i, h);
            rest = after;
        }
    }
}

/// The backward buffers of one chunk or a run of chunks, chunk-major
/// (layouts as in [`LanesWorkspace`]); per chunk:
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
    t_n: usize,
    i_n: usize,
    h_n: usize,
) => backward_chunk_impl);

/// Backward over the T steps of one chunk, last step first.
#[inline(always)]
fn backward_chunk_impl<T: Real, S: IsaMarker>(
    b: &mut BackwardChunk<'_, T>,
    w: &[T],
    need_dx: bool,
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
    for t in (0..t_n).rev() {
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
                let ([di, df, dg, d_o], dc_l) = cell_backward(gates, tc_k[l], c_prev_k[l], dh_l, dc_k[l]);
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
        // [dx_t; dh_{t-1}] = [W_ih | W_hh]ᵀ · dz_t (dh only, unless dx is wanted)
        let dz_t = DzStep { dz, t, t_n, g_n: g4 };
        let dx_t = &mut dx[t * i_n..][..i_n];
        for (k0, width) in column_blocks(if need_dx { 0 } else { i_n }, i_n + h_n) {
            let panel = &w[k0 * g4..][..g4 * width];
            if std::mem::size_of::<T>() == 4 {
                back_block_width::<T, LANES>(width, &dz_t, panel, k0, dx_t, dh);
            } else {
                back_block_width::<T, { LANES / 2 }>(width, &dz_t, panel, k0, dx_t, dh);
            }
        }
    }
}

/// [`back_block`] for a run-time width (1 to 8).
#[inline(always)]
fn back_block_width<T: Real, const W: usize>(
    width: usize,
    dz: &DzStep<'_, T>,
    panel: &[T],
    k0: usize,
    dx_t: &mut [Lane<T>],
    dh: &mut [Lane<T>],
) {
    match width {
        8 => back_block::<T, 8, W>(dz, panel, k0, dx_t, dh),
        7 => back_block::<T, 7, W>(dz, panel, k0, dx_t, dh),
        6 => back_block::<T, 6, W>(dz, panel, k0, dx_t, dh),
        5 => back_block::<T, 5, W>(dz, panel, k0, dx_t, dh),
        4 => back_block::<T, 4, W>(dz, panel, k0, dx_t, dh),
        3 => back_block::<T, 3, W>(dz, panel, k0, dx_t, dh),
        2 => back_block::<T, 2, W>(dz, panel, k0, dx_t, dh),
        _ => back_block::<T, 1, W>(dz, panel, k0, dx_t, dh),
    }
}

/// The back-projection's blocks of columns `first..k_n`, as (start, width):
/// equal widths of at most 8. Each block's N multiply-add chains run 4H
/// long, and fewer than 4 would wait on FMA latency (a lone last column
/// doubled the seed's backward step).
fn column_blocks(first: usize, k_n: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocks = (k_n - first).div_ceil(8);
    (0..blocks).scan(first, move |k0, b| {
        let width = (k_n - *k0) / (blocks - b);
        let block = (*k0, width);
        *k0 += width;
        Some(block)
    })
}

/// Where gate row g at step t sits in one chunk's dz (4H/4, T, 4).
#[inline(always)]
fn dz_index(g: usize, t: usize, t_n: usize) -> usize {
    ((g / 4) * t_n + t) * 4 + g % 4
}

/// The gate gradients of one chunk at one step, read in gate order.
struct DzStep<'a, T> {
    dz: &'a [Lane<T>],
    t: usize,
    t_n: usize,
    g_n: usize,
}

/// N columns k0.. of Wᵀ·dz (`panel`: the block's (4H, N) weights), written to dx_t
/// for input columns and to dh for hidden ones.
///
/// The lanes go in parts W wide, one vector register (W = LANES in f32, two
/// halves in f64), each part a full pass over the gate rows: with both
/// halves in one pass, each weight fed two multiply-adds, so the compiler
/// held the broadcasts in registers, ran out and spilled them every row.
#[inline(always)]
fn back_block<T: Real, const N: usize, const W: usize>(
    dz: &DzStep<'_, T>,
    panel: &[T],
    k0: usize,
    dx_t: &mut [Lane<T>],
    dh: &mut [Lane<T>],
) {
    let mut sums = [Lane::splat(T::ZERO); N];
    for part in 0..LANES / W {
        let mut acc = [[T::ZERO; W]; N];
        for blk in 0..dz.g_n / 4 {
            let d4 = &dz.dz[(blk * dz.t_n + dz.t) * 4..][..4];
            for (j4, d) in d4.iter().enumerate() {
                let g = 4 * blk + j4;
                let wr: [T; N] = panel[g * N..][..N].try_into().unwrap();
                for l in 0..W {
                    for j in 0..N {
                        acc[j][l] = d[part * W + l].mul_add(wr[j], acc[j][l]);
                    }
                }
            }
        }
        for (sum, a) in sums.iter_mut().zip(&acc) {
            sum.0[part * W..][..W].copy_from_slice(a);
        }
    }
    let i_n = dx_t.len();
    for (j, a) in sums.iter().enumerate() {
        let k = k0 + j;
        if k < i_n {
            dx_t[k] = *a;
        } else {
            dh[k - i_n] = *a;
        }
    }
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
    q_n: usize,
    t_n: usize,
    g_n: usize,
    k_n: usize,
) {
    debug_assert_eq!(out.len(), g_n * k_n);
    for pack in packs.iter_mut() {
        pack.resize(STEP_BLOCK * k_n, Lane::splat(T::ZERO));
    }
    let [pack0, pack1] = packs;
    let parallel = threads::num_threads() > 1 && q_n * t_n * g_n * k_n >= PARALLEL_MIN_LANE_MACS;
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
            || weight_grads_rows(pack0, dz, v, v_qs, v_ts, top, bias_top, 0, q_n, t_n, g_n, k_n),
            || weight_grads_rows(pack1, dz, v, v_qs, v_ts, bottom, bias_bottom, mid, q_n, t_n, g_n, k_n),
        );
    } else {
        weight_grads_rows(pack0, dz, v, v_qs, v_ts, out, bias, 0, q_n, t_n, g_n, k_n);
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
    q_n: usize,
    t_n: usize,
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
    q_n: usize,
    t_n: usize,
    g_n: usize,
    k_n: usize,
) {
    let s_n = q_n * t_n;
    for s0 in (0..s_n).step_by(STEP_BLOCK) {
        let sb = STEP_BLOCK.min(s_n - s0);
        // pack_v[k·sb + s] = v at step s0 + s, feature k.
        for s in 0..sb {
            let (q, t) = ((s0 + s) / t_n, (s0 + s) % t_n);
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
                        t_n,
                        s0,
                        sb,
                        v: &pack_v[..k_n * sb],
                        first: s0 == 0,
                    };
                    if let (Some(bias), 0) = (bias.as_deref_mut(), k_first) {
                        let row0 = (rg * row_group + blk) * 4;
                        bias_block(&tile, &mut bias[row0..row0 + 4]);
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
                        // 4 x 4 tiles, accumulators one register wide.
                        let f32 = std::mem::size_of::<T>() == 4;
                        // A remainder of 2 or 3 columns as 4 x 2 (the seed's
                        // 10 = 4 + 4 + 2): half the dz loads of two 4 x 1.
                        let n = match k_end - k0 {
                            4.. => 4,
                            2 | 3 => 2,
                            _ => 1,
                        };
                        match (n, f32) {
                            (4, true) => outer_block::<T, 4, LANES>(&tile, block, k0, k_n),
                            (4, false) => outer_block::<T, 4, { LANES / 2 }>(&tile, block, k0, k_n),
                            (2, true) => outer_block::<T, 2, LANES>(&tile, block, k0, k_n),
                            (2, false) => outer_block::<T, 2, { LANES / 2 }>(&tile, block, k0, k_n),
                            (_, true) => outer_block::<T, 1, LANES>(&tile, block, k0, k_n),
                            (_, false) => outer_block::<T, 1, { LANES / 2 }>(&tile, block, k0, k_n),
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
    t_n: usize,
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
            let (q, t) = (s / self.t_n, s % self.t_n);
            let run = (self.t_n - t).min(end - s);
            let dz = &self.dz[q * self.g_n * self.t_n + (self.block * self.t_n + t) * 4..][..4 * run];
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
fn bias_block<T: Real>(tile: &Tile<'_, T>, bias: &mut [T]) {
    // Four separate sums, not an array of four: the compiler kept the array
    // in memory, each add waiting on the store before it (measured).
    let zero = Lane::splat(T::ZERO);
    let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
    for (_, dz) in tile.runs() {
        for a in dz.chunks_exact(4) {
            for l in 0..LANES {
                s0[l] += a[0][l];
                s1[l] += a[1][l];
                s2[l] += a[2][l];
                s3[l] += a[3][l];
            }
        }
    }
    for (out, sum) in bias.iter_mut().zip(&[s0, s1, s2, s3]) {
        let sum = lane_sum(sum);
        *out = if tile.first { sum } else { *out + sum };
    }
}

/// A 4 x N block of the weight gradient, accumulated lane-wise in
/// registers, then summed across lanes once.
///
/// The accumulators are W wide, one vector register: W = LANES in f32;
/// in f64 (W = 8) each lane vector is added to them as two halves, so a
/// 4 x 4 tile fits the 32 registers (16 accumulators, 8 operands).
#[inline(always)]
fn outer_block<T: Real, const N: usize, const W: usize>(tile: &Tile<'_, T>, rows: &mut [T], k0: usize, k_n: usize) {
    let sb = tile.sb;
    let columns: [&[Lane<T>]; N] = std::array::from_fn(|m| &tile.v[(k0 + m) * sb..][..sb]);
    // One array per row, not one 4 x N array: the compiler keeps small
    // arrays in registers but left a 4 x 4 one in memory (measured).
    let zero = [[T::ZERO; W]; N];
    let (mut acc0, mut acc1, mut acc2, mut acc3) = (zero, zero, zero, zero);
    // One run of steps per chunk the block spans.
    for (first, dz) in tile.runs() {
        let cols: [&[Lane<T>]; N] = std::array::from_fn(|m| &columns[m][first..][..dz.len() / 4]);
        for (i, a) in dz.chunks_exact(4).enumerate() {
            let b: [Lane<T>; N] = std::array::from_fn(|m| cols[m][i]);
            for half in 0..LANES / W {
                for m in 0..N {
                    fma_part(&a[0], &b[m], half * W, &mut acc0[m]);
                    fma_part(&a[1], &b[m], half * W, &mut acc1[m]);
                    fma_part(&a[2], &b[m], half * W, &mut acc2[m]);
                    fma_part(&a[3], &b[m], half * W, &mut acc3[m]);
                }
            }
        }
    }
    for (j, acc) in [acc0, acc1, acc2, acc3].iter().enumerate() {
        for m in 0..N {
            let sum = pairwise_sum(acc[m]);
            let out = &mut rows[j * k_n + k0 + m];
            *out = if tile.first { sum } else { *out + sum };
        }
    }
}

/// acc += a·b on lanes `from..from + W`, lane by lane.
#[inline(always)]
fn fma_part<T: Real, const W: usize>(a: &Lane<T>, b: &Lane<T>, from: usize, acc: &mut [T; W]) {
    for l in 0..W {
        acc[l] = a[from + l].mul_add(b[from + l], acc[l]);
    }
}

/// Sum of W values, in a fixed pairwise order (W a power of two).
#[inline(always)]
fn pairwise_sum<T: Real, const W: usize>(mut s: [T; W]) -> T {
    let mut width = W / 2;
    while width > 0 {
        for l in 0..width {
            s[l] += s[l + width];
        }
        width /= 2;
    }
    s[0]
}

/// Sum of the lanes, in a fixed pairwise order.
#[inline(always)]
fn lane_sum<T: Real>(v: &Lane<T>) -> T {
    pairwise_sum(v.0)
}

/// pred (B, T, O) = h·Wᵀ + b for every step of the last forward.
pub(crate) fn dense_forward<T: Real>(ws: &LanesWorkspace<T>, s: LstmShape, head: Dense<'_, T>, pred: &mut [T]) {
    dense_forward_kernel(&ws.h, s.batch, s.steps, s.hidden, head.weight, head.bias, pred);
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
                let y = dense_row(h_t, &head.weight[o * h_n..][..h_n], head.bias[o]);
                for l in 0..rows {
                    pred[((q * LANES + l) * t_n + t) * o_n + o] = y[l];
                }
            }
        }
    }
}

/// b + Σ_k w[k]·h[k], lane by lane.
#[inline(always)]
fn dense_row<T: Real>(h: &[Lane<T>], w: &[T], b: T) -> Lane<T> {
    let mut acc = Lane::splat(b);
    for (&hk, &wk) in h.iter().zip(w) {
        for l in 0..LANES {
            acc[l] = hk[l].mul_add(wk, acc[l]);
        }
    }
    acc
}

/// Backward of [`dense_forward`] then of the LSTM: from d_pred (B, T, O),
/// the dense layer's gradients `d_weight` (O, H) and `d_bias` (O,), then
/// BPTT as [`backward`] with d_out = d_pred·W (formed in lanes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_backward<T: Real>(
    ws: &mut LanesWorkspace<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
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
    dense_grads(
        &ws.h,
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
    backward_from_lanes(ws, p, s, None, None, grads, dh0, dc0);
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
                dense_grad_row(dp, h_t, w_o, d_t, &mut acc_w[o * h_n..][..h_n]);
                for l in 0..LANES {
                    acc_b[o][l] += dp[l];
                }
            }
        }
    }
    for (dw, acc) in d_weight.iter_mut().zip(acc_w.iter()) {
        *dw = lane_sum(acc);
    }
    for (db, acc) in d_bias.iter_mut().zip(acc_b.iter()) {
        *db = lane_sum(acc);
    }
}

/// For one output o at one step: d_h += dp·w_o, and the lane-wise sums
/// of dp·h for the weight gradient.
#[inline(always)]
fn dense_grad_row<T: Real>(dp: Lane<T>, h: &[Lane<T>], w: &[T], d_h: &mut [Lane<T>], acc_w: &mut [Lane<T>]) {
    let mut k0 = 0;
    while k0 < h.len() {
        let n = h.len() - k0;
        let r = k0..;
        if n >= 8 {
            dense_grad_block::<T, 8>(dp, &h[r.clone()], &w[r.clone()], &mut d_h[r.clone()], &mut acc_w[r]);
            k0 += 8;
        } else if n >= 4 {
            dense_grad_block::<T, 4>(dp, &h[r.clone()], &w[r.clone()], &mut d_h[r.clone()], &mut acc_w[r]);
            k0 += 4;
        } else {
            dense_grad_block::<T, 1>(dp, &h[r.clone()], &w[r.clone()], &mut d_h[r.clone()], &mut acc_w[r]);
            k0 += 1;
        }
    }
}

/// N hidden units of [`dense_grad_row`]: fixed-size copies, lanes outermost,
/// so the compiler vectorises along the lanes (as in `project_block`).
#[inline(always)]
fn dense_grad_block<T: Real, const N: usize>(
    dp: Lane<T>,
    h: &[Lane<T>],
    w: &[T],
    d_h: &mut [Lane<T>],
    acc_w: &mut [Lane<T>],
) {
    let hk: [Lane<T>; N] = h[..N].try_into().unwrap();
    let wk: [T; N] = w[..N].try_into().unwrap();
    let mut dk: [Lane<T>; N] = d_h[..N].try_into().unwrap();
    let mut ak: [Lane<T>; N] = acc_w[..N].try_into().unwrap();
    for l in 0..LANES {
        for j in 0..N {
            dk[j][l] = dp[l].mul_add(wk[j], dk[j][l]);
            ak[j][l] = dp[l].mul_add(hk[j][l], ak[j][l]);
        }
    }
    d_h[..N].copy_from_slice(&dk);
    acc_w[..N].copy_from_slice(&ak);
}
