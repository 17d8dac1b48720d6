//! The layer as two stateless functions, for callers that own every buffer
//! (the PyTorch op): [`forward`] writes the activations backward needs into
//! a caller's `saved` buffer of [`saved_len`] elements, [`backward`] reads
//! them from it. Nothing is kept between the two calls, and calls may run on
//! several threads at once: each takes the kernels' scratch from a small
//! pool ([`ScratchPool`]) and gives it back.
//!
//! The kernel is [`Kernel::Auto`]'s choice, a pure function of the shape, so
//! a backward pass always reads the layout its forward pass wrote.

use std::sync::Mutex;

use super::poison;
use super::{run_backward, run_forward, Kernel, LstmGrads, LstmParams, LstmShape, Scratch, Sequences};
use crate::error::{check_finite, check_len, check_positive, Error, Result};
use crate::simd::Real;
use crate::threads::fork::PerProcess;

/// Elements of `T` the saved activations of a forward pass over `s` take
/// (any `T`-aligned buffer of this length works: the kernels align inside).
/// The shape must pass [`check_sizes`] (else the count may overflow).
pub fn saved_len<T: Real>(s: LstmShape) -> usize {
    Kernel::Auto.saved_len::<T>(s)
}

/// Checks that every size is positive and that the buffers of shape `s`
/// (the saved activations above all) can be counted in bytes without
/// overflow: `Error::Config` naming the shape otherwise. Every kernel's
/// saved buffer is below `(B + 16)·(T + 1)·(I + 8·(H + 16)) + 64` values.
pub fn check_sizes<T: Real>(s: LstmShape) -> Result<()> {
    check_positive("batch size", s.batch)?;
    check_positive("time steps", s.steps)?;
    check_positive("input_size", s.input)?;
    check_positive("hidden_size", s.hidden)?;
    let bound = (s.hidden.checked_add(16))
        .and_then(|h| h.checked_mul(8))
        .and_then(|h| h.checked_add(s.input))
        .and_then(|k| k.checked_mul(s.steps.checked_add(1)?))
        .and_then(|n| n.checked_mul(s.batch.checked_add(16)?))
        .and_then(|n| n.checked_add(64))
        .and_then(|n| n.checked_mul(std::mem::size_of::<T>()));
    match bound {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(()),
        _ => Err(Error::Config {
            arg: "sizes",
            expected: "a shape whose buffers can be addressed".into(),
            got: format!(
                "batch {}, steps {}, input_size {}, hidden_size {}",
                s.batch, s.steps, s.input, s.hidden
            ),
        }),
    }
}

/// Forward over x (B, T, I) from `initial` (h0, c0), each (B, H), or zeros.
/// Writes out (B, T, H), h_n and c_n (B, H), and, when given, `saved`
/// ([`saved_len`] elements) for [`backward`]. Every argument is checked
/// (lengths, finite inputs) before anything is written.
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Pooled>(
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: &mut [T],
    h_n: &mut [T],
    c_n: &mut [T],
    saved: Option<&mut [T]>,
) -> Result<()> {
    check_sizes::<T>(s)?;
    check_params(p, s)?;
    check_len("x", x, &[s.batch, s.steps, s.input])?;
    seq.check(s.batch, s.steps)?;
    check_finite_steps("x", x, s, seq)?;
    check_pair(initial, ("h0", "c0"), s)?;
    check_len("out", out, &[s.batch, s.steps, s.hidden])?;
    check_len("h_n", h_n, &[s.batch, s.hidden])?;
    check_len("c_n", c_n, &[s.batch, s.hidden])?;
    if let Some(saved) = &saved {
        check_len("saved", saved, &[saved_len::<T>(s)])?;
    }
    let kernel = Kernel::Auto.resolve(s.batch, s.hidden);
    T::pool().with(|scratch| {
        run_forward(
            kernel,
            &mut scratch.kernels,
            p,
            s,
            seq,
            x,
            initial,
            Some(out),
            (h_n, c_n),
            saved,
        );
    });
    Ok(())
}

/// One time step: x_t (B, I) from `state` (h, c), each (B, H), or zeros;
/// writes the new (h, c) into `h_out`, `c_out`. Keeps nothing (the
/// forward pass over one step without saved activations: the same bits).
pub fn step<T: Pooled>(
    p: LstmParams<'_, T>,
    s: LstmShape,
    x_t: &[T],
    state: Option<(&[T], &[T])>,
    h_out: &mut [T],
    c_out: &mut [T],
) -> Result<()> {
    debug_assert_eq!(s.steps, 1);
    check_sizes::<T>(s)?;
    check_params(p, s)?;
    check_len("x_t", x_t, &[s.batch, s.input])?;
    check_finite("x_t", x_t)?;
    check_pair(state, ("h", "c"), s)?;
    check_len("out h", h_out, &[s.batch, s.hidden])?;
    check_len("out c", c_out, &[s.batch, s.hidden])?;
    let kernel = Kernel::Auto.resolve(s.batch, s.hidden);
    T::pool().with(|scratch| {
        // With one step, the output is h_n: write it, and h_n to scratch.
        poison::fit(&mut scratch.h_n, s.batch * s.hidden);
        let seq = Sequences::WHOLE;
        let state_out = (&mut scratch.h_n[..], c_out);
        run_forward(
            kernel,
            &mut scratch.kernels,
            p,
            s,
            seq,
            x_t,
            state,
            Some(h_out),
            state_out,
            None,
        );
    });
    Ok(())
}

/// Backward through time over the [`forward`] pass that read `x` (and
/// `initial`) and wrote `saved`. `d_out` (B, T, H) is the gradient by the
/// output, `d_final` by (h_n, c_n) or zeros. Overwrites the weight
/// gradients, dh0 and dc0 (B, H), and dx (B, T, I) when given.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Pooled>(
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    saved: &[T],
    d_out: &[T],
    d_final: Option<(&[T], &[T])>,
    dx: Option<&mut [T]>,
    grads: LstmGrads<'_, T>,
    dh0: &mut [T],
    dc0: &mut [T],
) -> Result<()> {
    check_sizes::<T>(s)?;
    check_params(p, s)?;
    grads.check(s.input, s.hidden)?;
    check_len("x", x, &[s.batch, s.steps, s.input])?;
    seq.check(s.batch, s.steps)?;
    check_finite_steps("x", x, s, seq)?;
    check_pair(initial, ("h0", "c0"), s)?;
    check_len("saved", saved, &[saved_len::<T>(s)])?;
    check_len("d_out", d_out, &[s.batch, s.steps, s.hidden])?;
    check_finite_steps("d_out", d_out, s, seq)?;
    check_pair(d_final, ("dh_n", "dc_n"), s)?;
    if let Some(dx) = &dx {
        check_len("dx", dx, &[s.batch, s.steps, s.input])?;
    }
    check_len("dh0", dh0, &[s.batch, s.hidden])?;
    check_len("dc0", dc0, &[s.batch, s.hidden])?;
    let kernel = Kernel::Auto.resolve(s.batch, s.hidden);
    T::pool().with(|scratch| {
        run_backward(
            kernel,
            &mut scratch.kernels,
            p,
            s,
            seq,
            x,
            saved,
            d_out,
            d_final,
            dx,
            grads,
            (dh0, dc0),
        )
    });
    Ok(())
}

/// Checks the weights: their lengths, and that they are finite.
pub(crate) fn check_params<T: Real>(p: LstmParams<'_, T>, s: LstmShape) -> Result<()> {
    p.check(s.input, s.hidden)?;
    check_finite("weight_ih", p.weight_ih)?;
    check_finite("weight_hh", p.weight_hh)?;
    check_finite("bias", p.bias)
}

/// Checks that a (B, T, F) array is finite on every row's real steps (its
/// padding is never read, so it may hold anything, NaN included).
fn check_finite_steps<T: Real>(arg: &'static str, data: &[T], s: LstmShape, seq: Sequences<'_>) -> Result<()> {
    if seq.lengths.is_none() {
        return check_finite(arg, data);
    }
    let row = data.len() / s.batch;
    let features = row / s.steps;
    for b in 0..s.batch {
        let real = &data[b * row..][..seq.len(b, s.steps) * features];
        if let Err(Error::NonFinite { index, .. }) = check_finite(arg, real) {
            return Err(Error::NonFinite {
                arg,
                index: b * row + index,
            });
        }
    }
    Ok(())
}

/// Checks an optional (h, c) pair: each (B, H) and finite.
pub(crate) fn check_pair<T: Real>(
    pair: Option<(&[T], &[T])>,
    names: (&'static str, &'static str),
    s: LstmShape,
) -> Result<()> {
    if let Some((h, c)) = pair {
        check_len(names.0, h, &[s.batch, s.hidden])?;
        check_len(names.1, c, &[s.batch, s.hidden])?;
        check_finite(names.0, h)?;
        check_finite(names.1, c)?;
    }
    Ok(())
}

/// One call's working memory: the kernels' scratch, and (B, H) for a
/// step's h_n (its output).
pub struct CallScratch<T> {
    pub(crate) kernels: Scratch<T>,
    pub(crate) h_n: Vec<T>,
}

impl<T: Real> Default for CallScratch<T> {
    fn default() -> Self {
        CallScratch {
            kernels: Scratch::new(),
            h_n: Vec::new(),
        }
    }
}

/// Scratch for concurrent calls: each call takes one (a new one when all
/// are in use) and gives it back, so calls never share one and a steady
/// stream of calls does not allocate. At most [`POOL_KEEP`] are kept.
pub struct ScratchPool<T> {
    free: Mutex<Vec<CallScratch<T>>>,
}

/// How many idle scratches a pool keeps: enough for a thread per core of
/// a typical machine; more concurrent calls allocate their own.
const POOL_KEEP: usize = 8;

impl<T: Real> ScratchPool<T> {
    pub const fn new() -> Self {
        ScratchPool {
            free: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a scratch of the pool's.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut CallScratch<T>) -> R) -> R {
        // A call that panicked holding the lock left the list whole.
        let taken = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut scratch = taken.unwrap_or_default();
        let result = f(&mut scratch);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_KEEP {
            free.push(scratch);
        }
        result
    }
}

impl<T: Real> Default for ScratchPool<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The element types with a process-wide [`ScratchPool`].
pub trait Pooled: Real {
    fn pool() -> &'static ScratchPool<Self>;
}

// One pool per process image: a child forked while another thread held a
// pool's lock (taking or giving back a scratch) would wait for it forever.
static POOL_F32: PerProcess<ScratchPool<f32>> = PerProcess::new();
static POOL_F64: PerProcess<ScratchPool<f64>> = PerProcess::new();

impl Pooled for f32 {
    fn pool() -> &'static ScratchPool<f32> {
        POOL_F32.get(ScratchPool::new)
    }
}

impl Pooled for f64 {
    fn pool() -> &'static ScratchPool<f64> {
        POOL_F64.get(ScratchPool::new)
    }
}
