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
//! The input projection of all T steps is one matrix product; each step then
//! adds `h·W_hhᵀ` and makes one fused pass over the gates. Backward runs the
//! steps in reverse, then gathers the weight gradients in one product each.

use crate::activation::{sigmoid, tanh};
use crate::error::{check_finite, check_len, check_positive, Error, Result};
use crate::linear::column_sums;
use crate::matmul::{matmul, Mat, MatMut};
use crate::real::Real;

/// The sizes of one sequence: B rows of T steps of I features, H hidden units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmShape {
    pub batch: usize,
    pub steps: usize,
    pub input: usize,
    pub hidden: usize,
}

/// Borrowed LSTM weights: `weight_ih` (4H, I), `weight_hh` (4H, H), `bias` (4H,).
#[derive(Clone, Copy)]
pub struct LstmParams<'a, T> {
    pub weight_ih: &'a [T],
    pub weight_hh: &'a [T],
    pub bias: &'a [T],
}

/// Where backward writes the weight gradients (same shapes as [`LstmParams`]).
pub struct LstmGrads<'a, T> {
    pub weight_ih: &'a mut [T],
    pub weight_hh: &'a mut [T],
    pub bias: &'a mut [T],
}

impl<T> LstmParams<'_, T> {
    fn check(&self, input: usize, hidden: usize) -> Result<()> {
        check_len("weight_ih", self.weight_ih, &[4 * hidden, input])?;
        check_len("weight_hh", self.weight_hh, &[4 * hidden, hidden])?;
        check_len("bias", self.bias, &[4 * hidden])
    }
}

impl<T> LstmGrads<'_, T> {
    fn check(&self, input: usize, hidden: usize) -> Result<()> {
        check_len("grad weight_ih", self.weight_ih, &[4 * hidden, input])?;
        check_len("grad weight_hh", self.weight_hh, &[4 * hidden, hidden])?;
        check_len("grad bias", self.bias, &[4 * hidden])
    }
}

/// An LSTM layer's working memory: the activations forward saves for
/// backward, and backward's scratch. Buffers are kept between calls and only
/// grow, so a steady-state training loop does not allocate.
pub struct Lstm<T> {
    input_size: usize,
    hidden_size: usize,
    /// The shape of the last forward pass, if any (backward needs it).
    shape: Option<LstmShape>,
    /// x (B, T, I), the input of the last forward pass.
    x: Vec<T>,
    /// (B, T, 4H): the pre-activations z during forward, then the activated
    /// gates (i, f, g, o).
    gates: Vec<T>,
    /// (B, T, H): c after each step.
    cells: Vec<T>,
    /// (B, T, H): tanh(c) after each step.
    tanh_cells: Vec<T>,
    /// (B, T, H): h before each step (h0 at t = 0).
    h_prev: Vec<T>,
    /// (B, T, H): h after each step: the layer's output.
    out: Vec<T>,
    /// (B, H): initial cell state.
    c0: Vec<T>,
    /// (B, H): final hidden and cell state.
    h_n: Vec<T>,
    c_n: Vec<T>,
    /// (B, T, 4H): gradient of the cost by the pre-activations z.
    dz: Vec<T>,
    /// (B, H): running gradients by h and c; after backward, by h0 and c0.
    dh: Vec<T>,
    dc: Vec<T>,
}

/// Resizes `v` to `n` elements; allocates only when it must grow.
fn fit<T: Real>(v: &mut Vec<T>, n: usize) {
    v.resize(n, T::ZERO);
}

impl<T: Real> Lstm<T> {
    /// A layer of `hidden_size` units reading `input_size` features per step.
    pub fn new(input_size: usize, hidden_size: usize) -> Result<Self> {
        check_positive("input_size", input_size)?;
        check_positive("hidden_size", hidden_size)?;
        Ok(Lstm {
            input_size,
            hidden_size,
            shape: None,
            x: Vec::new(),
            gates: Vec::new(),
            cells: Vec::new(),
            tanh_cells: Vec::new(),
            h_prev: Vec::new(),
            out: Vec::new(),
            c0: Vec::new(),
            h_n: Vec::new(),
            c_n: Vec::new(),
            dz: Vec::new(),
            dh: Vec::new(),
            dc: Vec::new(),
        })
    }

    pub fn input_size(&self) -> usize {
        self.input_size
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// The shape of the last forward pass.
    pub fn shape(&self) -> Option<LstmShape> {
        self.shape
    }

    fn shape_for(&self, batch: usize, steps: usize) -> LstmShape {
        LstmShape {
            batch,
            steps,
            input: self.input_size,
            hidden: self.hidden_size,
        }
    }

    /// Sizes every forward buffer for (batch, steps) and returns the input
    /// buffer x (B, T, I) for the caller to fill before [`Self::run_forward`].
    pub(crate) fn input_buffer(&mut self, batch: usize, steps: usize) -> &mut [T] {
        let s = self.shape_for(batch, steps);
        let (n, h) = (s.batch * s.steps, s.hidden);
        fit(&mut self.x, n * s.input);
        fit(&mut self.gates, n * 4 * h);
        fit(&mut self.cells, n * h);
        fit(&mut self.tanh_cells, n * h);
        fit(&mut self.h_prev, n * h);
        fit(&mut self.out, n * h);
        fit(&mut self.c0, s.batch * h);
        fit(&mut self.h_n, s.batch * h);
        fit(&mut self.c_n, s.batch * h);
        self.shape = None;
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
        check_positive("batch size", batch)?;
        check_positive("time steps", steps)?;
        check_len("x", x, &[batch, steps, self.input_size])?;
        check_finite("x", x)?;
        self.check_state(initial, batch)?;
        p.check(self.input_size, self.hidden_size)?;
        self.input_buffer(batch, steps).copy_from_slice(x);
        self.run_forward(p, batch, steps, initial);
        Ok(())
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

    /// Forward on the input already in the buffer from [`Self::input_buffer`].
    /// Preconditions (checked by the callers): weights and state of the right
    /// lengths.
    pub(crate) fn run_forward(
        &mut self,
        p: LstmParams<'_, T>,
        batch: usize,
        steps: usize,
        initial: Option<(&[T], &[T])>,
    ) {
        let s = self.shape_for(batch, steps);
        let (b_n, t_n, h) = (s.batch, s.steps, s.hidden);
        let g4 = 4 * h;
        debug_assert_eq!(self.x.len(), b_n * t_n * s.input);
        debug_assert_eq!(self.gates.len(), b_n * t_n * g4);

        // z = x·W_ihᵀ for all B·T rows at once.
        matmul(
            MatMut::rows(&mut self.gates, b_n * t_n, g4),
            false,
            Mat::rows(&self.x, b_n * t_n, s.input),
            Mat::rows(p.weight_ih, g4, s.input).t(),
        );

        match initial {
            Some((h0, c0)) => {
                for b in 0..b_n {
                    let row = b * t_n * h;
                    self.h_prev[row..row + h].copy_from_slice(&h0[b * h..(b + 1) * h]);
                }
                self.c0.copy_from_slice(c0);
            }
            None => {
                for b in 0..b_n {
                    let row = b * t_n * h;
                    self.h_prev[row..row + h].fill(T::ZERO);
                }
                self.c0.fill(T::ZERO);
            }
        }

        let w_hh_t = Mat::rows(p.weight_hh, g4, h).t();
        for t in 0..t_n {
            // z_t += h_{t-1}·W_hhᵀ, rows b·T + t of the (B, T, ·) buffers.
            matmul(
                MatMut::strided(&mut self.gates[t * g4..], b_n, g4, t_n * g4, 1),
                true,
                Mat::strided(&self.h_prev[t * h..], b_n, h, t_n * h, 1),
                w_hh_t,
            );
            for b in 0..b_n {
                let row = b * t_n + t;
                let z = &mut self.gates[row * g4..(row + 1) * g4];
                let (cells_before, cells_rest) = self.cells.split_at_mut(row * h);
                let c_prev = if t == 0 {
                    &self.c0[b * h..(b + 1) * h]
                } else {
                    &cells_before[(row - 1) * h..]
                };
                let c_out = &mut cells_rest[..h];
                let tanh_c_out = &mut self.tanh_cells[row * h..(row + 1) * h];
                let h_out = &mut self.out[row * h..(row + 1) * h];
                let (zi, rest) = z.split_at_mut(h);
                let (zf, rest) = rest.split_at_mut(h);
                let (zg, zo) = rest.split_at_mut(h);
                let (bi, bf, bg, bo) = (&p.bias[..h], &p.bias[h..2 * h], &p.bias[2 * h..3 * h], &p.bias[3 * h..]);
                for k in 0..h {
                    let i = sigmoid(zi[k] + bi[k]);
                    let f = sigmoid(zf[k] + bf[k]);
                    let g = tanh(zg[k] + bg[k]);
                    let o = sigmoid(zo[k] + bo[k]);
                    zi[k] = i;
                    zf[k] = f;
                    zg[k] = g;
                    zo[k] = o;
                    let c = f * c_prev[k] + i * g;
                    let tc = tanh(c);
                    c_out[k] = c;
                    tanh_c_out[k] = tc;
                    h_out[k] = o * tc;
                }
                if t + 1 < t_n {
                    self.h_prev[(row + 1) * h..(row + 2) * h].copy_from_slice(&self.out[row * h..(row + 1) * h]);
                }
            }
        }

        for b in 0..b_n {
            let last = (b * t_n + t_n - 1) * h;
            self.h_n[b * h..(b + 1) * h].copy_from_slice(&self.out[last..last + h]);
            self.c_n[b * h..(b + 1) * h].copy_from_slice(&self.cells[last..last + h]);
        }
        self.shape = Some(s);
    }

    /// The output of the last forward pass: h at every step, (B, T, H).
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
            .shape
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
        let s = self.shape.expect("forward ran");
        let (b_n, t_n, h) = (s.batch, s.steps, s.hidden);
        let g4 = 4 * h;
        fit(&mut self.dz, b_n * t_n * g4);
        fit(&mut self.dh, b_n * h);
        fit(&mut self.dc, b_n * h);
        match d_final {
            Some((dh_n, dc_n)) => {
                self.dh.copy_from_slice(dh_n);
                self.dc.copy_from_slice(dc_n);
            }
            None => {
                self.dh.fill(T::ZERO);
                self.dc.fill(T::ZERO);
            }
        }

        let w_hh = Mat::rows(p.weight_hh, g4, h);
        for t in (0..t_n).rev() {
            for b in 0..b_n {
                let row = b * t_n + t;
                let gate = &self.gates[row * g4..(row + 1) * g4];
                let dz = &mut self.dz[row * g4..(row + 1) * g4];
                let c_prev = if t == 0 {
                    &self.c0[b * h..(b + 1) * h]
                } else {
                    &self.cells[(row - 1) * h..row * h]
                };
                let tanh_c = &self.tanh_cells[row * h..(row + 1) * h];
                let d_out_row = &d_out[row * h..(row + 1) * h];
                let dh = &self.dh[b * h..(b + 1) * h];
                let dc = &mut self.dc[b * h..(b + 1) * h];
                for k in 0..h {
                    let (i, f, g, o) = (gate[k], gate[h + k], gate[2 * h + k], gate[3 * h + k]);
                    let dh_k = d_out_row[k] + dh[k];
                    let tc = tanh_c[k];
                    let dc_k = dc[k] + dh_k * o * (T::ONE - tc * tc);
                    dz[k] = dc_k * g * i * (T::ONE - i);
                    dz[h + k] = dc_k * c_prev[k] * f * (T::ONE - f);
                    dz[2 * h + k] = dc_k * i * (T::ONE - g * g);
                    dz[3 * h + k] = dh_k * tc * o * (T::ONE - o);
                    dc[k] = dc_k * f;
                }
            }
            // dh_{t-1} = dz_t · W_hh
            matmul(
                MatMut::rows(&mut self.dh, b_n, h),
                false,
                Mat::strided(&self.dz[t * g4..], b_n, g4, t_n * g4, 1),
                w_hh,
            );
        }

        let n = b_n * t_n;
        let dz = Mat::rows(&self.dz, n, g4);
        matmul(
            MatMut::rows(grads.weight_ih, g4, s.input),
            false,
            dz.t(),
            Mat::rows(&self.x, n, s.input),
        );
        matmul(
            MatMut::rows(grads.weight_hh, g4, h),
            false,
            dz.t(),
            Mat::rows(&self.h_prev, n, h),
        );
        column_sums(&self.dz, g4, grads.bias);
        if let Some(dx) = dx {
            matmul(
                MatMut::rows(dx, n, s.input),
                false,
                dz,
                Mat::rows(p.weight_ih, g4, s.input),
            );
        }
    }

    /// The gradient by the initial state (dh0, dc0), each (B, H), after
    /// [`Self::backward`].
    pub fn initial_state_grad(&self) -> (&[T], &[T]) {
        (&self.dh, &self.dc)
    }
}
