//! The LSTM kernel for every batch size at medium and large hidden sizes:
//! gates in SIMD lanes, batch rows broadcast, hidden units in blocks
//! shared across threads.
//!
//! What the best systems do on the CPU, built here:
//! - **The input projection and the weight gradients are products over
//!   all steps at once**, outside the recurrence (`forward::project`,
//!   `backward::weight_grads`): W_ih is read once per pass, not per step,
//!   and only `h·W_hhᵀ` is sequential.
//! - **Each step is cut by hidden units** (blocks of [`plan::UNITS`], each
//!   with its four gates' weights in one panel) and, for larger batches,
//!   by groups of rows (`plan::Cut`): at B = 1 and H = 512 a step offers 32
//!   tasks, so one row's step runs on many cores. The team's workers claim
//!   their own blocks first every step, so each keeps its slice of W_hh in
//!   its own cache (the CPU form of "persistent RNNs"), with one barrier per
//!   step (`threads::team`).
//! - **No lane is wasted on padding rows**: batch rows are broadcast, and
//!   the vector runs along the gates of a block of units, so B = 1 runs
//!   the same tiles as B = 256, one row per tile row.
//! - Rows of different lengths are packed like a `PackedSequence` (`plan`):
//!   a batch costs its real steps.
//!
//! Files: `plan.rs` (slots, packed rows, the cut), `pack.rs` (weight
//! panels), `tile.rs` (the register tiles and their fixed order of
//! summation), `forward.rs`, `backward.rs`, and `chain.rs` (one step's
//! backward without weight gradients, and a chain's weight gradients at
//! once: a user's own loop of one-step calls).
//!
//! Saved for backward, by packed row r (R ≤ B·T) in a caller's buffer of
//! [`saved_len`] values: gates (R, 4Hp), c (R, Hp), tanh c (R, Hp), h
//! before the step (R, Hp), then c0 (B, Hp).

mod backward;
pub(crate) mod chain;
mod dot;
mod forward;
mod pack;
pub(crate) mod plan;
mod tile;

use super::packed_from::PackedFrom;
use super::params::{LstmGrads, LstmParams, LstmShape, Sequences};
use super::poison;
use crate::simd::Real;
use crate::threads::{self, team::Shared};
use plan::{padded, Cut, Plan, UNITS};

/// Elements of the saved buffers, in the module docs' order.
fn saved_parts(s: LstmShape) -> [usize; 5] {
    let (n, hp) = (s.batch * s.steps, padded(s.hidden));
    [n * 4 * hp, n * hp, n * hp, n * hp, s.batch * hp]
}

/// Elements a saved buffer needs for shape `s`.
pub(crate) fn saved_len(s: LstmShape) -> usize {
    saved_parts(s).iter().sum()
}

/// Where a forward pass saves its activations.
pub(crate) enum SavedTo<'a, T> {
    /// The whole layout (the module docs, [`saved_len`] elements).
    Buffer(&'a mut [T]),
    /// One step's (T = 1) compact layout, what `chain.rs` reads
    /// ([`step_saved_len`] elements): gates (B, 4Hp), tanh c (B, Hp). h
    /// and c before the step and c after it are the caller's h0, c0 and c
    /// (its output), so they go to scratch.
    Step(&'a mut [T]),
}

/// Elements of the compact one-step layout: gates, tanh c.
pub(crate) fn step_saved_parts(s: LstmShape) -> [usize; 2] {
    let (b, hp) = (s.batch, padded(s.hidden));
    [b * 4 * hp, b * hp]
}

/// Elements a one-step saved buffer ([`SavedTo::Step`]) needs.
pub(crate) fn step_saved_len(s: LstmShape) -> usize {
    step_saved_parts(s).iter().sum()
}

/// The saved buffers inside `buf`: gates, c, tanh c, h_prev, c0.
fn saved_views<T>(buf: &mut [T], s: LstmShape) -> [Shared<T>; 5] {
    let parts = saved_parts(s);
    let all = Shared::new(buf);
    let mut at = 0;
    parts.map(|n| {
        let view = all.sub(at, n);
        at += n;
        view
    })
}

/// The units kernel's scratch; buffers only grow.
pub(crate) struct UnitsScratch<T> {
    plan: Plan,
    /// (R,): the offset in x of each packed row's input.
    x_rows: Vec<usize>,
    /// The packed weights (`pack.rs`).
    w_ih_t: Vec<T>,
    w_hh_t: Vec<T>,
    bias: Vec<T>,
    /// The weights the forward panels above were packed from.
    packed_from: PackedFrom<T>,
    w_hh_b: Vec<T>,
    w_ih_b: Vec<T>,
    /// A pass that saves nothing: z of a chunk of steps, (2, B, Hp) h, (B,
    /// Hp) c.
    z: Vec<T>,
    h: Vec<T>,
    c: Vec<T>,
    /// Backward: dz (R, 4Hp) and transposed (4Hp, R), the running dh and dc (B, Hp), [x | 1] by
    /// packed row (R, Ip), dx by packed row (R, Ip), the gradients in panel
    /// order (4Hp, Hp) and (4Hp, Ip).
    dz: Vec<T>,
    dz_t: Vec<T>,
    dh: Vec<T>,
    dc: Vec<T>,
    xg: Vec<T>,
    dx: Vec<T>,
    dw_hh: Vec<T>,
    dw_ih: Vec<T>,
    /// A chain's weight gradients: x (R, I) and h_prev (R, H) of its rows
    /// stacked, when they come in several parts.
    rows_x: Vec<T>,
    rows_h: Vec<T>,
}

impl<T: Real> UnitsScratch<T> {
    pub(crate) fn new() -> Self {
        UnitsScratch {
            plan: Plan::new(),
            x_rows: Vec::new(),
            w_ih_t: Vec::new(),
            w_hh_t: Vec::new(),
            bias: Vec::new(),
            packed_from: PackedFrom::new(),
            w_hh_b: Vec::new(),
            w_ih_b: Vec::new(),
            z: Vec::new(),
            h: Vec::new(),
            c: Vec::new(),
            dz: Vec::new(),
            dz_t: Vec::new(),
            dh: Vec::new(),
            dc: Vec::new(),
            xg: Vec::new(),
            dx: Vec::new(),
            dw_hh: Vec::new(),
            dw_ih: Vec::new(),
            rows_x: Vec::new(),
            rows_h: Vec::new(),
        }
    }
}

/// From this many values of k (inputs, or hidden units) on, a product
/// reads the weights as given (dot form, `dot.rs`) instead of packing
/// them first: a sum over the lanes per element costs less than a
/// vector's worth of k, and packing costs a read and a write of the
/// weights whenever they change (calls with the same weights reuse the
/// panels: `packed_from.rs`). The choice is by shape only, so `step` and a
/// forward pass over the same rows take the same form (the same bits).
const DOT_MIN_K: usize = 128;

/// Up to this many values of a weight matrix (W_ih, W_hh), its product
/// reads it packed whatever K: the panels are kept across calls with the
/// same weights (`packed_from.rs`), and the broadcast tile beats the dot
/// form (H128 forward, avx512: 13-18 % less time at B1-B16 with W_hh
/// packed, 7-22 % at B2-B16 with W_ih; training unchanged). Past it,
/// comparing the weights every call costs more than it saves (B1 H256:
/// +9 %). By shape only, as [`DOT_MIN_K`].
const PACKED_MAX: usize = 1 << 16;

/// Below this many multiply-adds per step, a step runs on one thread: its
/// barrier (a few hundred ns with the team awake) would cost more than the
/// share it hands out. B1 H128 is just above.
const STEP_PARALLEL_MIN_MACS: usize = 1 << 16;
/// Below this many multiply-adds, a pass without steps (the input
/// projection, the weight gradients) runs on one thread.
const PASS_PARALLEL_MIN_MACS: usize = 1 << 18;

/// Threads for a pass of `macs` multiply-adds with this threshold.
fn workers_for(macs: usize, min: usize) -> usize {
    if macs < min {
        1
    } else {
        threads::num_threads()
    }
}

/// Steps per chunk of a pass that saves nothing: the chunk's z (its rows ×
/// 4Hp) stays about this many values.
const STREAM_CHUNK_VALUES: usize = 1 << 18;

/// Forward over x (B, T, I) from (h0, c0) or zeros, each row as `seq`
/// says. Writes out (B, T, H) (zero past each row's length), (h_n, c_n),
/// each (B, H), and, when given, `saved` ([`saved_len`] elements).
/// `dot_always` runs both products in dot form whatever k (one-step calls,
/// `chain.rs`: packing the weights would cost more than a step's product;
/// the same choice with and without saving keeps their bits equal).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Real>(
    ws: &mut UnitsScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: &mut [T],
    h_n: &mut [T],
    c_n: &mut [T],
    saved: Option<SavedTo<'_, T>>,
    dot_always: bool,
) {
    let (b_n, t_n, i_n, h) = (s.batch, s.steps, s.input, s.hidden);
    let (hp, nb) = (padded(h), h.div_ceil(UNITS));
    ws.plan.make(b_n, t_n, seq);
    let plan = &ws.plan;
    let dot_input = dot_always || (i_n >= DOT_MIN_K && 4 * h * i_n > PACKED_MAX);
    let dot_hidden = dot_always || (h >= DOT_MIN_K && 4 * h * h > PACKED_MAX);
    // The panels depend on the weights the products read packed (and the
    // bias, always packed), and on the shape and which products those are.
    let key = [i_n, h, usize::from(dot_input), usize::from(dot_hidden)];
    let empty: &[T] = &[];
    let packed_parts = [
        if dot_input { empty } else { p.weight_ih },
        if dot_hidden { empty } else { p.weight_hh },
        p.bias,
    ];
    if !ws.packed_from.same_as(&key, &packed_parts) {
        pack::pack_forward(
            p,
            i_n,
            h,
            (!dot_input).then_some(&mut ws.w_ih_t),
            (!dot_hidden).then_some(&mut ws.w_hh_t),
            &mut ws.bias,
        );
        ws.packed_from.remember(&key, &packed_parts);
    }
    ws.x_rows.resize(plan.rows(), 0);
    for st in 0..plan.run() {
        for q in 0..plan.active[st] {
            ws.x_rows[plan.offset[st] + q] = (plan.row[q] * t_n + plan.time(q, st)) * i_n;
        }
    }
    // Past its length a row's output is zero.
    for b in 0..b_n {
        out[(b * t_n + seq.len(b, t_n)) * h..(b + 1) * t_n * h].fill(T::ZERO);
    }
    let step_workers = workers_for(b_n * 4 * hp * h, STEP_PARALLEL_MIN_MACS);
    let cut = Cut::for_step(b_n, nb, step_workers, forward::tile_rows());
    let proj_workers = workers_for(plan.rows() * 4 * hp * i_n, PASS_PARALLEL_MIN_MACS);
    let (x, out, h_n, c_n) = (Shared::of(x), Shared::new(out), Shared::new(h_n), Shared::new(c_n));
    // The initial state by slot, padding units zero: into `h0` (rows of
    // Hp) and `c0`.
    let set_initial = |h0: &mut [T], c0: &mut [T]| {
        h0.fill(T::ZERO);
        c0.fill(T::ZERO);
        if let Some((h_init, c_init)) = initial {
            for (q, &b) in plan.row.iter().enumerate() {
                h0[q * hp..][..h].copy_from_slice(&h_init[b * h..][..h]);
                c0[q * hp..][..h].copy_from_slice(&c_init[b * h..][..h]);
            }
        }
    };
    match saved {
        Some(saved) => {
            let [gates, c, tanh_c, h_prev, c0] = match saved {
                SavedTo::Buffer(buf) => saved_views(buf, s),
                SavedTo::Step(buf) => {
                    assert!(t_n == 1 && buf.len() >= step_saved_len(s), "one-step saved buffer");
                    poison::fit(&mut ws.h, b_n * hp);
                    poison::fit(&mut ws.c, b_n * hp);
                    poison::fit(&mut ws.z, b_n * hp);
                    let [gates, tanh_c] = step_saved_parts(s);
                    let all = Shared::new(buf);
                    [
                        all.sub(0, gates),
                        Shared::new(&mut ws.c),
                        all.sub(gates, tanh_c),
                        Shared::new(&mut ws.h),
                        Shared::new(&mut ws.z[..b_n * hp]),
                    ]
                }
            };
            // SAFETY: no pass runs yet; these are the first rows and c0.
            unsafe { set_initial(h_prev.slice_mut(0, b_n * hp), c0.slice_mut(0, b_n * hp)) };
            let job = forward::Job {
                plan,
                cut,
                i_n,
                h,
                weights: p,
                dot_input,
                dot_hidden,
                w_ih_t: Shared::of(&ws.w_ih_t),
                w_hh_t: Shared::of(&ws.w_hh_t),
                bias: &ws.bias,
                x,
                x_rows: &ws.x_rows,
                z: gates,
                z_first: 0,
                rows: forward::Rows::Saved { h_prev, c, tanh_c, c0 },
                out,
                h_n,
                c_n,
            };
            forward::project(&job, 0, plan.rows(), proj_workers);
            forward::recur(&job, 0, plan.run(), step_workers);
        }
        None => {
            let chunk_steps = (STREAM_CHUNK_VALUES / (b_n * 4 * hp)).max(1);
            poison::fit(&mut ws.z, chunk_steps.min(t_n) * b_n * 4 * hp);
            poison::fit(&mut ws.h, 2 * b_n * hp);
            poison::fit(&mut ws.c, b_n * hp);
            set_initial(&mut ws.h[..b_n * hp], &mut ws.c);
            // The other parity's padding units too: they are read as h.
            ws.h[b_n * hp..].fill(T::ZERO);
            let (z, h_state, c_state) = (Shared::new(&mut ws.z), Shared::new(&mut ws.h), Shared::new(&mut ws.c));
            let job = |z_first: usize, z: Shared<T>| forward::Job {
                plan,
                cut,
                i_n,
                h,
                weights: p,
                dot_input,
                dot_hidden,
                w_ih_t: Shared::of(&ws.w_ih_t),
                w_hh_t: Shared::of(&ws.w_hh_t),
                bias: &ws.bias,
                x,
                x_rows: &ws.x_rows,
                z,
                z_first,
                rows: forward::Rows::Streamed { h: h_state, c: c_state },
                out,
                h_n,
                c_n,
            };
            let mut first = 0;
            while first < plan.run() {
                let last = (first + chunk_steps).min(plan.run());
                let job = job(plan.offset[first], z);
                forward::project(&job, plan.offset[first], plan.offset[last], proj_workers);
                forward::recur(&job, first, last, step_workers);
                first = last;
            }
        }
    }
}

/// Backward through time over the forward pass that read `x` and wrote
/// `saved`: the weight gradients (overwritten), dx (B, T, I) when asked
/// (zero past each row's length), and the gradients by (h0, c0).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Real>(
    ws: &mut UnitsScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    saved: &[T],
    x: &[T],
    d_out: &[T],
    d_final: Option<(&[T], &[T])>,
    dx: Option<&mut [T]>,
    grads: LstmGrads<'_, T>,
    dh0: &mut [T],
    dc0: &mut [T],
) {
    let (b_n, t_n, i_n, h) = (s.batch, s.steps, s.input, s.hidden);
    let (hp, nb, ip) = (padded(h), h.div_ceil(UNITS), padded(i_n + 1));
    ws.plan.make(b_n, t_n, seq);
    let plan = &ws.plan;
    let rows = plan.rows();
    pack::pack_backward(p, i_n, ip, h, &mut ws.w_hh_b, &mut ws.w_ih_b);
    poison::fit(&mut ws.dz, rows * 4 * hp);
    poison::fit(&mut ws.dh, b_n * hp);
    poison::fit(&mut ws.dc, b_n * hp);
    ws.dh.fill(T::ZERO);
    ws.dc.fill(T::ZERO);
    if let Some((dh_n, dc_n)) = d_final {
        for (q, &b) in plan.row.iter().enumerate() {
            ws.dh[q * hp..][..h].copy_from_slice(&dh_n[b * h..][..h]);
            ws.dc[q * hp..][..h].copy_from_slice(&dc_n[b * h..][..h]);
        }
    }
    // [x | 1] by packed row, for [dW_ih | db].
    poison::fit(&mut ws.xg, rows * ip);
    for st in 0..plan.run() {
        for q in 0..plan.active[st] {
            let r = plan.offset[st] + q;
            let src = &x[(plan.row[q] * t_n + plan.time(q, st)) * i_n..][..i_n];
            let dst = &mut ws.xg[r * ip..][..ip];
            dst[..i_n].copy_from_slice(src);
            dst[i_n] = T::ONE;
            dst[i_n + 1..].fill(T::ZERO);
        }
    }
    let step_workers = workers_for(b_n * 4 * hp * h, STEP_PARALLEL_MIN_MACS);
    let cut = Cut::for_step(b_n, nb, step_workers, forward::tile_rows());
    let grad_workers = workers_for(rows * 4 * hp * (hp + ip), PASS_PARALLEL_MIN_MACS);
    // The saved buffers are only read: views of a shared borrow.
    let parts = saved_parts(s);
    let mut at = 0;
    let [gates, c, tanh_c, h_prev, c0] = parts.map(|n| {
        let view = Shared::of(&saved[at..at + n]);
        at += n;
        view
    });
    let job = backward::Job {
        plan,
        cut,
        h,
        gates,
        c,
        tanh_c,
        c0,
        d_out: Shared::of(d_out),
        w_hh_b: Shared::of(&ws.w_hh_b),
        dz: Shared::new(&mut ws.dz),
        dh: Shared::new(&mut ws.dh),
        dc: Shared::new(&mut ws.dc),
        dh0: Shared::new(dh0),
        dc0: Shared::new(dc0),
    };
    backward::recur(&job, step_workers);
    poison::fit(&mut ws.dw_hh, 4 * hp * hp);
    poison::fit(&mut ws.dw_ih, 4 * hp * ip);
    poison::fit(&mut ws.dz_t, rows * 4 * hp);
    let want_dx = dx.is_some();
    if want_dx {
        poison::fit(&mut ws.dx, rows * ip);
    }
    let grads_job = backward::Grads {
        dz: Shared::of(&ws.dz),
        dz_t: Shared::new(&mut ws.dz_t),
        h_prev,
        xg: Shared::of(&ws.xg),
        dw_hh: Shared::new(&mut ws.dw_hh),
        dw_ih: Shared::new(&mut ws.dw_ih),
        w_ih_b: Shared::of(&ws.w_ih_b),
        dx: want_dx.then(|| Shared::new(&mut ws.dx)),
        rows,
        hp,
        ip,
    };
    backward::weight_grads(&grads_job, grad_workers);
    backward::unpack_grads(
        &ws.dw_hh,
        &ws.dw_ih,
        (h, hp, i_n, ip),
        grads.weight_hh,
        grads.weight_ih,
        grads.bias,
    );
    if let Some(dx) = dx {
        dx.fill(T::ZERO);
        for st in 0..plan.run() {
            for q in 0..plan.active[st] {
                let r = plan.offset[st] + q;
                dx[(plan.row[q] * t_n + plan.time(q, st)) * i_n..][..i_n].copy_from_slice(&ws.dx[r * ip..][..i_n]);
            }
        }
    }
}
