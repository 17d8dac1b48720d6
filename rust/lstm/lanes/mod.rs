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
//!
//! Files: `layout.rs` (rows into and out of lane form), `plan.rs` (lanes by
//! row length, the parallel cut), `tile.rs` (the projections' register
//! tiles), `forward.rs`, `backward.rs`, `weight_grads.rs` (the
//! weight-gradient sweep) and `dense.rs` (the seed network's fused dense head).

mod backward;
mod dense;
mod forward;
mod layout;
mod plan;
mod tile;
mod weight_grads;

use crate::lstm::params::LstmShape;
use crate::lstm::poison;
use crate::simd::{Lane, Real, LANES};
pub(crate) use backward::backward;
pub(crate) use dense::{dense_backward, dense_forward};
pub(crate) use forward::forward;
use plan::Plan;

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
