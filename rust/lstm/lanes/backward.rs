//! Backward through time: the back-projection's weight panels and one
//! chunk's steps, last first; then the weight-gradient sweep (`weight_grads.rs`).

use super::layout::{from_lanes, gather_to_lanes, rows_from_slot, scatter_from_lanes, slot_from_rows, to_lanes};
use super::plan::{run_split, tasks_for, Split};
use super::tile::{dot_tile_blocks, tile_blocks, with_width};
use super::weight_grads::{weight_grads, ChunkSteps};
use super::{chunks, fit, saved_view, LanesScratch, SavedRef};
use crate::lstm::cell::cell_backward;
use crate::lstm::params::{LstmGrads, LstmParams, LstmShape, Sequences};
use crate::lstm::poison;
use crate::simd::vector::{store_lane, tile_lanes, Reg};
use crate::simd::{dispatch, IsaMarker, Lane, Real, LANES};

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
pub(super) fn backward_from_lanes<T: Real>(
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
