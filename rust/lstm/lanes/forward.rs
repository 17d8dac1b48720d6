//! The forward pass: saving (for backward) or streaming (saving nothing),
//! the forward weight panels, and one chunk's steps (projection, activation).

use super::layout::{
    from_lanes, gather_to_lanes, rows_from_slot, scatter_from_lanes, slot_from_rows, slot_from_rows_chunk, to_lanes,
};
use super::plan::{run_split, tasks_for, Plan, Split, NONE};
use super::tile::{dot_tile, tile_blocks, with_width};
use super::{chunks, fit, saved_view, saved_view_mut, LanesScratch};
use crate::lstm::params::{LstmParams, LstmShape, RowSteps, Sequences};
use crate::lstm::poison;
use crate::simd::activation::sigmoid_tanh;
use crate::simd::vector::{store_lane, tile_lanes, Reg, Vector};
use crate::simd::{dispatch, IsaMarker, Lane, Real, LANES};

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
