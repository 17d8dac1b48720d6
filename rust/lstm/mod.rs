//! The LSTM layer: forward over a whole sequence, and backward through time.
//!
//! Shapes (batch-major, row-major): x (B, T, I), output (B, T, H), state
//! h, c (B, H). Weights in PyTorch layout with gate order (i, f, g, o):
//! `weight_ih` (4H, I), `weight_hh` (4H, H), `bias` (4H,). Per step:
//!
//! ```text
//! z = x_t·W_ihᵀ + h·W_hhᵀ + bias        i, f, o = σ(z_i, z_f, z_o)   g = tanh(z_g)
//! c' = f·c + i·g                        h' = o·tanh(c')
//! ```
//!
//! Three kernels compute the same function, each in its own file beside
//! this one: `lanes/` (the batch in SIMD lanes, for small and medium
//! hidden sizes, where per-call overhead and the transcendental functions
//! dominate), `rows/` (a few rows, the gates in lanes: one long series)
//! and `gemm.rs` (matrix products, for large ones). They share the types of
//! `params.rs` and the cell arithmetic of `cell.rs`. [`Lstm`] picks one per
//! call by shape ([`Kernel`]).

use crate::error::{check_finite, check_len, check_positive, Error, Result};
use crate::linear::{linear_backward, linear_forward, LinearShape};
use crate::simd::Real;
use std::sync::atomic::{AtomicU8, Ordering};

mod cell;
pub mod chain;
pub mod functional;
mod gemm;
mod lanes;
mod packed_from;
mod params;
pub mod poison;
mod rows;
mod units;

use gemm::GemmScratch;
use lanes::LanesScratch;
pub use params::{ChainRows, Dense, LstmGrads, LstmParams, LstmShape, Sequences};
use rows::RowsScratch;
pub use rows::{ROWS_MAX_BATCH, ROWS_MAX_HIDDEN};
use units::UnitsScratch;

/// Which kernel computes the layer. Both compute the same function (checked
/// against each other and by finite differences in the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Kernel {
    /// The choice by shape: [`Kernel::Rows`] for up to
    /// [`AUTO_ROWS_MAX_BATCH`] rows of up to [`AUTO_ROWS_MAX_HIDDEN`] units,
    /// else [`Kernel::Units`] for up to [`AUTO_UNITS_MAX_BATCH`] rows or
    /// more than [`LANES_MAX_HIDDEN`] units, else [`Kernel::Lanes`].
    #[default]
    Auto = 0,
    /// The batch in SIMD lanes (`lstm/lanes/`).
    Lanes = 1,
    /// Matrix products from the GEMM crate (`lstm/gemm.rs`).
    Gemm = 2,
    /// One batch row at a time, the gates in SIMD lanes (`lstm/rows/`).
    Rows = 3,
    /// Gates in SIMD lanes, batch rows broadcast, hidden units in blocks
    /// across threads (`lstm/units/`).
    Units = 4,
}

impl Kernel {
    /// The kernel that computes `batch` rows of `hidden` units when this one
    /// is asked for: a pure function of the shape, so a forward pass and
    /// the backward pass that reads its saved activations always agree.
    pub fn resolve(self, batch: usize, hidden: usize) -> Kernel {
        let forced = forced_kernel();
        if self == Kernel::Auto && forced != Kernel::Auto {
            return forced.resolve(batch, hidden);
        }
        match self {
            Kernel::Auto if batch <= AUTO_ROWS_MAX_BATCH && hidden <= AUTO_ROWS_MAX_HIDDEN => Kernel::Rows,
            Kernel::Auto if batch <= AUTO_UNITS_MAX_BATCH || hidden > LANES_MAX_HIDDEN => Kernel::Units,
            Kernel::Auto => Kernel::Lanes,
            // The rows kernel's per-row scratch holds at most ROWS_MAX_HIDDEN units.
            Kernel::Rows if hidden > ROWS_MAX_HIDDEN => Kernel::Lanes,
            chosen => chosen,
        }
    }

    /// Elements of `T` the activations saved by a forward pass of shape
    /// `s` take with this kernel (any `T`-aligned buffer of this many works).
    pub fn saved_len<T: Real>(self, s: LstmShape) -> usize {
        match self.resolve(s.batch, s.hidden) {
            Kernel::Lanes => lanes::saved_len::<T>(s),
            Kernel::Rows => rows::saved_len(s),
            Kernel::Units => units::saved_len(s),
            _ => gemm::saved_len(s),
        }
    }
}

/// The kernel [`Kernel::Auto`] stands for in every later call, process-wide,
/// whatever the shape (`Kernel::Auto` restores the choice by shape): for the
/// tests and the fuzzer, which run each kernel through the same entry points
/// users call. A forward pass and its backward must run under the same
/// setting, since the saved activations' layout is the kernel's.
pub fn force_kernel(kernel: Kernel) {
    FORCED_KERNEL.store(kernel as u8, Ordering::Relaxed);
}

/// The kernel set by [`force_kernel`].
pub fn forced_kernel() -> Kernel {
    match FORCED_KERNEL.load(Ordering::Relaxed) {
        1 => Kernel::Lanes,
        2 => Kernel::Gemm,
        3 => Kernel::Rows,
        4 => Kernel::Units,
        _ => Kernel::Auto,
    }
}

static FORCED_KERNEL: AtomicU8 = AtomicU8::new(Kernel::Auto as u8);

/// The kernel choice by shape ([`Kernel::Auto`]); `python/sincos_rs/_saved.py`
/// mirrors these (the saved buffer's size depends on the kernel).
///
/// - The rows kernel (a row's gates in lanes, one row after another) for a
///   few rows of few units: a step is too short to share between threads.
pub const AUTO_ROWS_MAX_BATCH: usize = ROWS_MAX_BATCH;
pub const AUTO_ROWS_MAX_HIDDEN: usize = 32;
/// - The units kernel up to this many rows: one 16-row lane chunk or less
///   would waste lanes in the lanes kernel and run on one thread, where the
///   units kernel shares every step's unit blocks between the threads.
pub const AUTO_UNITS_MAX_BATCH: usize = 16;
/// - The lanes kernel for more rows, up to this many units (its weights are
///   read once per 16 rows and step); the units kernel beyond.
pub const LANES_MAX_HIDDEN: usize = 1024;

/// Every kernel's scratch: what a call needs only while it runs (packed
/// weights, backward's gate gradients, ...), as opposed to the activations
/// a forward pass saves for its backward pass. Buffers only grow.
pub struct Scratch<T> {
    lanes: LanesScratch<T>,
    rows: RowsScratch<T>,
    gemm: GemmScratch<T>,
    pub(crate) units: UnitsScratch<T>,
}

impl<T: Real> Scratch<T> {
    pub fn new() -> Self {
        Scratch {
            lanes: LanesScratch::new(),
            rows: RowsScratch::new(),
            gemm: GemmScratch::new(),
            units: UnitsScratch::new(),
        }
    }
}

impl<T: Real> Default for Scratch<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs forward with `kernel` (resolved) over `x` (B, T, I): out (B, T, H)
/// when given (the lanes kernel can skip it when a dense head is fused),
/// (h_n, c_n) and `saved` (`kernel.saved_len(s)` elements). No checks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_forward<T: Real>(
    kernel: Kernel,
    scratch: &mut Scratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: Option<&mut [T]>,
    (h_n, c_n): (&mut [T], &mut [T]),
    saved: Option<&mut [T]>,
) {
    debug_assert_eq!(x.len(), s.batch * s.steps * s.input);
    debug_assert!(saved.as_ref().is_none_or(|v| v.len() >= kernel.saved_len::<T>(s)));
    match (kernel, out) {
        (Kernel::Lanes, out) => lanes::forward(&mut scratch.lanes, p, s, seq, x, initial, out, h_n, c_n, saved),
        (Kernel::Rows, Some(out)) => rows::forward(&mut scratch.rows, p, s, seq, x, initial, out, h_n, c_n, saved),
        (Kernel::Units, Some(out)) => {
            let saved = saved.map(units::SavedTo::Buffer);
            units::forward(&mut scratch.units, p, s, seq, x, initial, out, h_n, c_n, saved, false)
        }
        (_, Some(out)) => gemm::forward(&mut scratch.gemm, p, s, seq, x, initial, out, h_n, c_n, saved),
        (_, None) => unreachable!("only the lanes kernel runs without an output"),
    }
}

/// Backward with `kernel` (resolved) over the forward pass that read `x`
/// and wrote `saved`. No checks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_backward<T: Real>(
    kernel: Kernel,
    scratch: &mut Scratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    x: &[T],
    saved: &[T],
    d_out: &[T],
    d_final: Option<(&[T], &[T])>,
    dx: Option<&mut [T]>,
    grads: LstmGrads<'_, T>,
    (dh0, dc0): (&mut [T], &mut [T]),
) {
    match kernel {
        Kernel::Lanes => lanes::backward(
            &mut scratch.lanes,
            p,
            s,
            seq,
            saved,
            d_out,
            d_final,
            dx,
            grads,
            dh0,
            dc0,
        ),
        Kernel::Rows => rows::backward(
            &mut scratch.rows,
            p,
            s,
            seq,
            saved,
            x,
            d_out,
            d_final,
            dx,
            grads,
            dh0,
            dc0,
        ),
        Kernel::Units => units::backward(
            &mut scratch.units,
            p,
            s,
            seq,
            saved,
            x,
            d_out,
            d_final,
            dx,
            grads,
            dh0,
            dc0,
        ),
        Kernel::Gemm | Kernel::Auto => gemm::backward(
            &mut scratch.gemm,
            p,
            s,
            seq,
            saved,
            x,
            d_out,
            d_final,
            dx,
            grads,
            dh0,
            dc0,
        ),
    }
}

/// An LSTM layer's working memory: the activations forward saves for
/// backward, and the kernels' scratch. Buffers are kept between calls and
/// only grow, so a steady-state training loop does not allocate.
pub struct Lstm<T> {
    input_size: usize,
    hidden_size: usize,
    /// The kernel asked for (see [`Self::set_kernel`]).
    kernel: Kernel,
    /// The shape and kernel of the last forward pass, if any.
    last: Option<(LstmShape, Kernel)>,
    /// x (B, T, I), the input of the last forward pass, for the kernels
    /// whose backward reads it (rows, GEMM); the lanes kernel saves its own.
    x: Vec<T>,
    /// (B, T, H): h after each step, the output of the last [`Self::forward`]
    /// (empty after [`Self::forward_into`], which wrote the caller's buffer).
    out: Vec<T>,
    /// (B, H): final hidden and cell state.
    h_n: Vec<T>,
    c_n: Vec<T>,
    /// (B, T, H): scratch for the gradient by the output (dense head, GEMM kernel).
    d_hidden: Vec<T>,
    /// (B, H): after backward, the gradients by h0 and c0.
    dh0: Vec<T>,
    dc0: Vec<T>,
    /// The activations the last forward pass saved for backward.
    saved: Vec<T>,
    scratch: Scratch<T>,
    /// The largest workspace bound [`Self::check_memory`] has seen granted.
    checked_elements: usize,
}

impl<T: Real> Lstm<T> {
    /// A layer of `hidden_size` units reading `input_size` features per step.
    pub fn new(input_size: usize, hidden_size: usize) -> Result<Self> {
        check_positive("input_size", input_size)?;
        check_positive("hidden_size", hidden_size)?;
        // Every size computed from these must fit in memory's address range.
        let weights = hidden_size
            .checked_mul(4)
            .and_then(|g| g.checked_mul(input_size.checked_add(hidden_size)?));
        if weights
            .and_then(|n| n.checked_mul(size_of::<T>()))
            .is_none_or(|b| b > isize::MAX as usize)
        {
            return Err(Error::Config {
                arg: "hidden_size",
                expected: "sizes whose weights fit in memory's address range".into(),
                got: format!("input size {input_size}, hidden size {hidden_size}"),
            });
        }
        Ok(Lstm {
            input_size,
            hidden_size,
            kernel: Kernel::Auto,
            last: None,
            x: Vec::new(),
            out: Vec::new(),
            d_hidden: Vec::new(),
            h_n: Vec::new(),
            c_n: Vec::new(),
            dh0: Vec::new(),
            dc0: Vec::new(),
            saved: Vec::new(),
            scratch: Scratch::new(),
            checked_elements: 0,
        })
    }

    /// An upper bound of the elements the layer's buffers need for `batch`
    /// rows of `steps` steps, with any kernel, forward and backward (about
    /// 14 values per row, step and unit; the batch padded to whole SIMD
    /// chunks), or None if it overflows.
    fn workspace_bound(&self, batch: usize, steps: usize) -> Option<usize> {
        let (i, h) = (self.input_size, self.hidden_size);
        let rows = batch.checked_next_multiple_of(16)?.checked_mul(steps.checked_add(1)?)?;
        let per_row = h.checked_mul(16)?.checked_add(i.checked_mul(4)?)?;
        let weights = h.checked_mul(4)?.checked_mul(i + h)?.checked_mul(5)?;
        rows.checked_mul(per_row)?.checked_add(weights)
    }

    /// Checks, before the buffers grow for (batch, steps), that this much
    /// memory can be had: [`Error::TooLarge`] instead of the process aborting
    /// in an allocation that fails. Best effort: a trial reservation of the
    /// bound, made only when it grows (so never in a steady state).
    pub(crate) fn check_memory(&mut self, batch: usize, steps: usize) -> Result<()> {
        let too_large = || {
            Error::TooLarge(format!(
                "{batch} rows of {steps} steps through an LSTM of hidden size {} need more memory than this machine can give",
                self.hidden_size
            ))
        };
        let need = self
            .workspace_bound(batch, steps)
            .filter(|n| n.checked_mul(size_of::<T>()).is_some_and(|b| b <= isize::MAX as usize))
            .ok_or_else(too_large)?;
        if need > self.checked_elements {
            Vec::<T>::new().try_reserve_exact(need).map_err(|_| too_large())?;
            self.checked_elements = need;
        }
        Ok(())
    }

    pub fn input_size(&self) -> usize {
        self.input_size
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Chooses the kernel for later calls (default [`Kernel::Auto`]); for
    /// benchmarks and tests.
    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.kernel = kernel;
        self.last = None;
    }

    /// The kernel a forward pass over `batch` rows will use.
    fn kernel_for(&self, batch: usize) -> Kernel {
        self.kernel.resolve(batch, self.hidden_size)
    }

    /// The shape of the last forward pass.
    pub fn shape(&self) -> Option<LstmShape> {
        self.last.map(|(s, _)| s)
    }

    /// Sizes the input buffer for (batch, steps) and returns it, x (B, T, I),
    /// for the caller to fill before [`Self::run_forward_dense`].
    pub(crate) fn input_buffer(&mut self, batch: usize, steps: usize) -> &mut [T] {
        poison::fit(&mut self.x, batch * steps * self.input_size);
        self.last = None;
        &mut self.x
    }

    /// Runs forward over x (B, T, I) from the initial state (h0, c0), each
    /// (B, H), or zeros. Afterwards [`Self::output`] is (B, T, H) and
    /// [`Self::final_state`] is (h_n, c_n).
    pub fn forward(
        &mut self,
        p: LstmParams<'_, T>,
        x: &[T],
        batch: usize,
        steps: usize,
        initial: Option<(&[T], &[T])>,
    ) -> Result<()> {
        self.check_forward(p, x, batch, steps, initial)?;
        self.check_memory(batch, steps)?;
        self.forward_to_own_output(p, Some(x), batch, steps, initial);
        Ok(())
    }

    /// [`Self::forward`] writing the output (B, T, H) into `out` instead of
    /// the layer's own buffer (which it empties): no copy for a caller that
    /// owns the destination, such as a NumPy array.
    pub fn forward_into(
        &mut self,
        p: LstmParams<'_, T>,
        x: &[T],
        batch: usize,
        steps: usize,
        initial: Option<(&[T], &[T])>,
        out: &mut [T],
    ) -> Result<()> {
        self.check_forward(p, x, batch, steps, initial)?;
        check_len("out", out, &[batch, steps, self.hidden_size])?;
        self.check_memory(batch, steps)?;
        self.out.clear();
        self.forward_kernel(p, Some(x), batch, steps, initial, Some(out));
        Ok(())
    }

    fn check_forward(
        &self,
        p: LstmParams<'_, T>,
        x: &[T],
        batch: usize,
        steps: usize,
        initial: Option<(&[T], &[T])>,
    ) -> Result<()> {
        check_positive("batch size", batch)?;
        check_positive("time steps", steps)?;
        check_len("x", x, &[batch, steps, self.input_size])?;
        check_finite("x", x)?;
        self.check_state(initial, batch)?;
        p.check(self.input_size, self.hidden_size)
    }

    /// Checks an initial state (h0, c0): each (B, H) and finite.
    pub(crate) fn check_state(&self, state: Option<(&[T], &[T])>, batch: usize) -> Result<()> {
        if let Some((h0, c0)) = state {
            check_len("h0", h0, &[batch, self.hidden_size])?;
            check_len("c0", c0, &[batch, self.hidden_size])?;
            check_finite("h0", h0)?;
            check_finite("c0", c0)?;
        }
        Ok(())
    }

    /// [`Self::forward_kernel`] writing the output into the layer's own
    /// buffer, [`Self::output`].
    fn forward_to_own_output(
        &mut self,
        p: LstmParams<'_, T>,
        x: Option<&[T]>,
        batch: usize,
        steps: usize,
        initial: Option<(&[T], &[T])>,
    ) {
        let mut out = std::mem::take(&mut self.out);
        poison::fit(&mut out, batch * steps * self.hidden_size);
        self.forward_kernel(p, x, batch, steps, initial, Some(&mut out));
        self.out = out;
    }

    /// Runs the kernel for this shape on `x` (B, T, I), or on the input
    /// buffer when None. Writes the (B, T, H) output into `out` when given
    /// (the lanes kernel can skip it when a dense head is fused).
    fn forward_kernel(
        &mut self,
        p: LstmParams<'_, T>,
        x: Option<&[T]>,
        batch: usize,
        steps: usize,
        initial: Option<(&[T], &[T])>,
        out: Option<&mut [T]>,
    ) -> Kernel {
        let s = LstmShape {
            batch,
            steps,
            input: self.input_size,
            hidden: self.hidden_size,
        };
        poison::fit(&mut self.h_n, batch * s.hidden);
        poison::fit(&mut self.c_n, batch * s.hidden);
        let kernel = self.kernel_for(batch);
        let x = match x {
            // The lanes kernel keeps x in its own layout.
            Some(x) if kernel == Kernel::Lanes => x,
            // The rows and GEMM kernels read x again in backward: keep a copy.
            Some(x) => {
                self.input_buffer(batch, steps).copy_from_slice(x);
                &self.x
            }
            None => &self.x,
        };
        poison::fit(&mut self.saved, kernel.saved_len::<T>(s));
        let state = (&mut self.h_n[..], &mut self.c_n[..]);
        let saved = Some(&mut self.saved[..]);
        run_forward(
            kernel,
            &mut self.scratch,
            p,
            s,
            Sequences::WHOLE,
            x,
            initial,
            out,
            state,
            saved,
        );
        self.last = Some((s, kernel));
        kernel
    }

    /// Whether the dense head is fused into the kernel (the lanes kernel
    /// reads and writes its lanes directly; the GEMM kernel uses linear.rs).
    fn fuses(kernel: Kernel) -> bool {
        kernel == Kernel::Lanes
    }

    /// Forward with a dense layer on top: pred (B, T, O) = out·Wᵀ + b, on the
    /// input in the buffer from [`Self::input_buffer`]. Preconditions (checked
    /// by the callers): weights, head and state of the right lengths.
    pub(crate) fn run_forward_dense(
        &mut self,
        p: LstmParams<'_, T>,
        batch: usize,
        steps: usize,
        initial: Option<(&[T], &[T])>,
        head: Dense<'_, T>,
        pred: &mut [T],
    ) -> Result<()> {
        let fused = Self::fuses(self.kernel_for(batch));
        if fused {
            self.out.clear();
            self.forward_kernel(p, None, batch, steps, initial, None);
        } else {
            self.forward_to_own_output(p, None, batch, steps, initial);
        }
        let s = self.shape().expect("forward ran");
        if fused {
            lanes::dense_forward(&self.saved, s, head, pred);
            Ok(())
        } else {
            let o = head.bias.len();
            let shape = LinearShape {
                rows: batch * steps,
                input: self.hidden_size,
                output: o,
            };
            linear_forward(shape, &self.out, head.weight, head.bias, pred)
        }
    }

    /// Backward of [`Self::run_forward_dense`] from d_pred (B, T, O): the
    /// head's gradients into `d_weight` (O, H) and `d_bias` (O,), then BPTT
    /// (no gradient by the final state; none by the input is formed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_backward_dense(
        &mut self,
        p: LstmParams<'_, T>,
        head: Dense<'_, T>,
        d_pred: &[T],
        d_weight: &mut [T],
        d_bias: &mut [T],
        grads: LstmGrads<'_, T>,
    ) -> Result<()> {
        let (s, kernel) = self
            .last
            .ok_or_else(|| Error::Order("backward called before forward".into()))?;
        poison::fit(&mut self.dh0, s.batch * s.hidden);
        poison::fit(&mut self.dc0, s.batch * s.hidden);
        if Self::fuses(kernel) {
            lanes::dense_backward(
                &mut self.scratch.lanes,
                p,
                s,
                &self.saved,
                head,
                d_pred,
                d_weight,
                d_bias,
                grads,
                &mut self.dh0,
                &mut self.dc0,
            );
            return Ok(());
        }
        let o = head.bias.len();
        let shape = LinearShape {
            rows: s.batch * s.steps,
            input: s.hidden,
            output: o,
        };
        let mut d_out = std::mem::take(&mut self.d_hidden);
        poison::fit(&mut d_out, s.batch * s.steps * s.hidden);
        linear_backward(
            shape,
            d_pred,
            &self.out,
            head.weight,
            Some(&mut d_out),
            d_weight,
            d_bias,
        )?;
        self.run_backward(p, &d_out, None, None, grads);
        self.d_hidden = d_out;
        Ok(())
    }

    /// The output of the last [`Self::forward`]: h at every step, (B, T, H);
    /// empty after [`Self::forward_into`] or a fused dense head.
    pub fn output(&self) -> &[T] {
        &self.out
    }

    /// The state after the last step of the last forward pass: (h_n, c_n),
    /// each (B, H).
    pub fn final_state(&self) -> (&[T], &[T]) {
        (&self.h_n, &self.c_n)
    }

    /// Backward through time over the last forward pass.
    ///
    /// `d_out` (B, T, H) is the gradient by the output; `d_final` the
    /// gradient by (h_n, c_n), or zeros. Writes the weight gradients into
    /// `grads` (overwriting), dx (B, T, I) when asked, and leaves the
    /// gradient by the initial state in [`Self::initial_state_grad`].
    pub fn backward(
        &mut self,
        p: LstmParams<'_, T>,
        d_out: &[T],
        d_final: Option<(&[T], &[T])>,
        dx: Option<&mut [T]>,
        grads: LstmGrads<'_, T>,
    ) -> Result<()> {
        let s = self
            .shape()
            .ok_or_else(|| Error::Order("backward called before forward".into()))?;
        p.check(self.input_size, self.hidden_size)?;
        grads.check(self.input_size, self.hidden_size)?;
        check_len("d_out", d_out, &[s.batch, s.steps, s.hidden])?;
        check_finite("d_out", d_out)?;
        if let Some((dh_n, dc_n)) = d_final {
            check_len("dh_n", dh_n, &[s.batch, s.hidden])?;
            check_len("dc_n", dc_n, &[s.batch, s.hidden])?;
            check_finite("dh_n", dh_n)?;
            check_finite("dc_n", dc_n)?;
        }
        if let Some(dx) = &dx {
            check_len("dx", dx, &[s.batch, s.steps, s.input])?;
        }
        self.run_backward(p, d_out, d_final, dx, grads);
        Ok(())
    }

    /// Backward without argument checks (the callers made them).
    pub(crate) fn run_backward(
        &mut self,
        p: LstmParams<'_, T>,
        d_out: &[T],
        d_final: Option<(&[T], &[T])>,
        dx: Option<&mut [T]>,
        grads: LstmGrads<'_, T>,
    ) {
        let (s, kernel) = self.last.expect("forward ran");
        poison::fit(&mut self.dh0, s.batch * s.hidden);
        poison::fit(&mut self.dc0, s.batch * s.hidden);
        run_backward(
            kernel,
            &mut self.scratch,
            p,
            s,
            Sequences::WHOLE,
            &self.x,
            &self.saved,
            d_out,
            d_final,
            dx,
            grads,
            (&mut self.dh0, &mut self.dc0),
        );
    }

    /// The gradient by the initial state (dh0, dc0), each (B, H), after
    /// [`Self::backward`].
    pub fn initial_state_grad(&self) -> (&[T], &[T]) {
        (&self.dh0, &self.dc0)
    }
}
