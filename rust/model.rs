//! The seed network: `Linear(I → H) → LSTM(H) → Linear(H → O)`, its cost,
//! and one training step (forward, backward through time, Adam, carry the
//! state) as a single call.
//!
//! The input layer is folded into the LSTM: `W_ih·(W_in·x + b_in) + b`
//! equals `(W_ih·W_in)·x + (W_ih·b_in + b)`, so the LSTM kernel reads the
//! I-wide input directly through effective weights `W_x = W_ih·W_in`
//! (4H, I) and `b_x = W_ih·b_in + b` (4H,). With the seed's I = 1 this halves
//! the per-step work. The gradients of the four real tensors follow from the
//! kernel's gradients by `W_x` and `b_x` exactly (chain rule, see
//! `run_backward`), and are checked against the NumPy reference.
//!
//! All parameters live in one flat vector, in the order of [`PARAM_NAMES`]
//! and PyTorch layouts, so Adam is one fused pass and a state dict is a set
//! of slices. Cost: `Σ (pred − y)² / B` over all B·T·O elements (the seed's
//! `sum(losses) / batch_size`, i.e. T × the mean squared error).
//!
//! A step from finite inputs can still overflow (a huge learning rate or
//! target): the cost, every gradient, the Adam update and the new carried
//! state are checked, and if one is not finite the step returns
//! [`Error::Diverged`] with the parameters, moments, step count and carried
//! state as they were. Everything a network holds is thus always finite, so
//! whatever is saved can be loaded.

use crate::adam::{Adam, AdamConfig};
use crate::error::{check_finite, check_len, check_positive, Error, Result};
use crate::lstm::{Dense, Kernel, Lstm, LstmGrads, LstmParams};
use crate::simd::Real;

/// Parameter names, in storage order (PyTorch's names and layouts).
pub const PARAM_NAMES: [&str; 7] = [
    "input.weight",
    "input.bias",
    "lstm.weight_ih",
    "lstm.weight_hh",
    "lstm.bias",
    "output.weight",
    "output.bias",
];

/// The sizes of the seed network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedConfig {
    pub input_size: usize,
    pub hidden_size: usize,
    pub output_size: usize,
}

impl Default for SeedConfig {
    /// The seed program's sizes: 1 → 10 → 1.
    fn default() -> Self {
        SeedConfig {
            input_size: 1,
            hidden_size: 10,
            output_size: 1,
        }
    }
}

impl SeedConfig {
    /// The shape of each parameter, in the order of [`PARAM_NAMES`].
    pub fn param_shapes(&self) -> [Vec<usize>; 7] {
        let (i, h, o) = (self.input_size, self.hidden_size, self.output_size);
        [
            vec![h, i],
            vec![h],
            vec![4 * h, h],
            vec![4 * h, h],
            vec![4 * h],
            vec![o, h],
            vec![o],
        ]
    }

    /// The total number of parameters.
    pub fn num_params(&self) -> usize {
        self.param_shapes().iter().map(|s| s.iter().product::<usize>()).sum()
    }

    /// The (offset, length) of each parameter in the flat vector.
    pub fn param_ranges(&self) -> [(usize, usize); 7] {
        let (i, h, o) = (self.input_size, self.hidden_size, self.output_size);
        let lengths = [h * i, h, 4 * h * h, 4 * h * h, 4 * h, o * h, o];
        let mut out = [(0, 0); 7];
        let mut offset = 0;
        for (slot, len) in out.iter_mut().zip(lengths) {
            *slot = (offset, len);
            offset += len;
        }
        out
    }

    /// Checks the sizes: each positive, and the parameters (with Adam's two
    /// moments) addressable. Call it before [`Self::num_params`] or
    /// [`Self::param_shapes`], whose arithmetic it guards.
    pub fn validate(&self) -> Result<()> {
        check_positive("input_size", self.input_size)?;
        check_positive("hidden_size", self.hidden_size)?;
        check_positive("output_size", self.output_size)?;
        let (i, h, o) = (self.input_size, self.hidden_size, self.output_size);
        let count = (|| {
            let lstm = h.checked_mul(8)?.checked_mul(h)?.checked_add(h.checked_mul(4)?)?;
            let linear = h
                .checked_mul(i)?
                .checked_add(h)?
                .checked_add(o.checked_mul(h)?)?
                .checked_add(o)?;
            lstm.checked_add(linear)?.checked_mul(3 * 8)
        })();
        if count.is_none_or(|bytes| bytes > isize::MAX as usize) {
            return Err(Error::Config {
                arg: "sizes",
                expected: "sizes whose parameters fit in memory's address range".into(),
                got: format!("{i} -> {h} -> {o}"),
            });
        }
        Ok(())
    }
}

/// The parameters (or their gradients) cut out of the flat vector by name.
struct Parts<S> {
    in_w: S,
    in_b: S,
    w_ih: S,
    w_hh: S,
    lstm_b: S,
    out_w: S,
    out_b: S,
}

fn split<'a, T>(cfg: &SeedConfig, flat: &'a [T]) -> Parts<&'a [T]> {
    let r = cfg.param_ranges();
    let at = |k: usize| &flat[r[k].0..r[k].0 + r[k].1];
    Parts {
        in_w: at(0),
        in_b: at(1),
        w_ih: at(2),
        w_hh: at(3),
        lstm_b: at(4),
        out_w: at(5),
        out_b: at(6),
    }
}

fn split_mut<'a, T>(cfg: &SeedConfig, flat: &'a mut [T]) -> Parts<&'a mut [T]> {
    let r = cfg.param_ranges();
    let (in_w, rest) = flat.split_at_mut(r[0].1);
    let (in_b, rest) = rest.split_at_mut(r[1].1);
    let (w_ih, rest) = rest.split_at_mut(r[2].1);
    let (w_hh, rest) = rest.split_at_mut(r[3].1);
    let (lstm_b, rest) = rest.split_at_mut(r[4].1);
    let (out_w, out_b) = rest.split_at_mut(r[5].1);
    Parts {
        in_w,
        in_b,
        w_ih,
        w_hh,
        lstm_b,
        out_w,
        out_b,
    }
}

/// The seed network with its optimiser, carried state and workspaces.
pub struct SeedNetwork<T> {
    config: SeedConfig,
    params: Vec<T>,
    grads: Vec<T>,
    adam: Adam<T>,
    /// The carried (h, c), each (B, H), or None for zeros.
    state: Option<(Vec<T>, Vec<T>)>,
    lstm: Lstm<T>,
    /// (B, T, O): the prediction of the last forward pass.
    pred: Vec<T>,
    /// (B, T, O) with its (B, T): the prediction of the last training step.
    train_pred: Vec<T>,
    train_shape: Option<(usize, usize)>,
    /// (B, T, O): gradient of the cost by the prediction.
    d_pred: Vec<T>,
    /// (4H, I) and (4H,): the effective input weights W_x = W_ih·W_in and
    /// bias b_x = W_ih·b_in + b (see the module docs).
    w_x: Vec<T>,
    b_x: Vec<T>,
    /// (4H, I): the gradient by W_x.
    grad_w_x: Vec<T>,
}

impl<T: Real> SeedNetwork<T> {
    /// A network with the given parameters (flat, in [`PARAM_NAMES`] order;
    /// see [`SeedConfig::param_ranges`]) and fresh Adam moments.
    pub fn new(config: SeedConfig, adam: AdamConfig, params: Vec<T>) -> Result<Self> {
        config.validate()?;
        check_len("params", &params, &[config.num_params()])?;
        check_finite("params", &params)?;
        let n = params.len();
        Ok(SeedNetwork {
            config,
            grads: vec![T::ZERO; n],
            adam: Adam::new(adam, n)?,
            params,
            state: None,
            lstm: Lstm::new(config.input_size, config.hidden_size)?,
            pred: Vec::new(),
            train_pred: Vec::new(),
            train_shape: None,
            d_pred: Vec::new(),
            w_x: vec![T::ZERO; 4 * config.hidden_size * config.input_size],
            b_x: vec![T::ZERO; 4 * config.hidden_size],
            grad_w_x: vec![T::ZERO; 4 * config.hidden_size * config.input_size],
        })
    }

    pub fn config(&self) -> SeedConfig {
        self.config
    }

    /// All parameters, flat.
    pub fn params(&self) -> &[T] {
        &self.params
    }

    /// The gradients of the last training step, flat (same layout as params).
    pub fn grads(&self) -> &[T] {
        &self.grads
    }

    /// Replaces all parameters (checked: length and finite).
    pub fn set_params(&mut self, params: &[T]) -> Result<()> {
        check_len("params", params, &[self.params.len()])?;
        check_finite("params", params)?;
        self.params.copy_from_slice(params);
        Ok(())
    }

    /// The optimiser: config, moments and step count.
    pub fn adam(&self) -> &Adam<T> {
        &self.adam
    }

    /// Replaces the optimiser's moments and step count (checked).
    pub fn set_adam_state(&mut self, m: &[T], v: &[T], step: u64) -> Result<()> {
        let n = self.params.len();
        check_len("adam m", m, &[n])?;
        check_len("adam v", v, &[n])?;
        check_finite("adam m", m)?;
        check_finite("adam v", v)?;
        if v.iter().any(|&x| x < T::ZERO) {
            return Err(Error::Config {
                arg: "adam v",
                expected: "values >= 0".into(),
                got: "a negative value".into(),
            });
        }
        self.adam.m.copy_from_slice(m);
        self.adam.v.copy_from_slice(v);
        self.adam.step = step;
        Ok(())
    }

    /// The carried state (h, c), each (B, H), or None (zeros).
    pub fn state(&self) -> Option<(&[T], &[T])> {
        self.state.as_ref().map(|(h, c)| (h.as_slice(), c.as_slice()))
    }

    /// Sets the carried state (h, c), each (B, H) for some B, or clears it.
    pub fn set_state(&mut self, state: Option<(&[T], &[T])>) -> Result<()> {
        match state {
            None => self.state = None,
            Some((h, c)) => {
                let hidden = self.config.hidden_size;
                if h.is_empty() || h.len() % hidden != 0 {
                    return Err(Error::Shape {
                        arg: "state h",
                        expected: format!("(B, {hidden})"),
                        got: format!("{} elements", h.len()),
                    });
                }
                check_len("state c", c, &[h.len() / hidden, hidden])?;
                check_finite("state h", h)?;
                check_finite("state c", c)?;
                self.state = Some((h.to_vec(), c.to_vec()));
            }
        }
        Ok(())
    }

    /// Chooses the LSTM kernel (default: by size); for benchmarks and tests.
    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.lstm.set_kernel(kernel);
    }

    /// Forgets the carried state: the next step starts from zeros.
    pub fn reset_state(&mut self) {
        self.state = None;
    }

    /// The prediction (B, T, O) made during the last training step, with
    /// its (B, T); None before the first step.
    pub fn last_prediction(&self) -> Option<(&[T], usize, usize)> {
        self.train_shape.map(|(b, t)| (self.train_pred.as_slice(), b, t))
    }

    /// Checks the input `arg` (seq, or predict_step's x_t) and that the
    /// carried state has its batch size.
    fn check_inputs(&self, arg: &'static str, seq: &[T], batch: usize, steps: usize) -> Result<()> {
        check_positive("batch size", batch)?;
        check_positive("time steps", steps)?;
        check_len(arg, seq, &[batch, steps, self.config.input_size])?;
        check_finite(arg, seq)?;
        if let Some((h, _)) = &self.state {
            let carried = h.len() / self.config.hidden_size;
            if carried != batch {
                return Err(Error::Config {
                    arg: "state",
                    expected: format!(
                        "a carried state of batch size {batch}, the batch size of {arg} (call reset_state() to start from zeros)"
                    ),
                    got: format!("batch size {carried}"),
                });
            }
        }
        Ok(())
    }

    /// Forward from the carried state; fills `pred` (B, T, O).
    fn run_forward(&mut self, seq: &[T], batch: usize, steps: usize) -> Result<()> {
        let c = self.config;
        let (i_n, h_n) = (c.input_size, c.hidden_size);
        let p = split(&c, &self.params);
        // W_x = W_ih·W_in (4H, I); b_x = W_ih·b_in + b (4H,).
        for g in 0..4 * h_n {
            let w_row = &p.w_ih[g * h_n..(g + 1) * h_n];
            for i in 0..i_n {
                self.w_x[g * i_n + i] = w_row
                    .iter()
                    .enumerate()
                    .fold(T::ZERO, |acc, (k, &w)| acc + w * p.in_w[k * i_n + i]);
            }
            self.b_x[g] = p.lstm_b[g] + w_row.iter().zip(p.in_b).fold(T::ZERO, |acc, (&w, &b)| acc + w * b);
        }
        self.lstm.input_buffer(batch, steps).copy_from_slice(seq);
        let lstm_params = LstmParams {
            weight_ih: &self.w_x,
            weight_hh: p.w_hh,
            bias: &self.b_x,
        };
        let state = self.state.as_ref().map(|(h, c)| (h.as_slice(), c.as_slice()));
        self.pred.resize(batch * steps * c.output_size, T::ZERO);
        let head = Dense {
            weight: p.out_w,
            bias: p.out_b,
        };
        self.lstm
            .run_forward_dense(lstm_params, batch, steps, state, head, &mut self.pred)
    }

    /// Prediction (B, T, O) for `seq` (B, T, I), from the carried state (or
    /// zeros); the carried state is left as it was.
    pub fn predict(&mut self, seq: &[T], batch: usize, steps: usize) -> Result<&[T]> {
        self.check_inputs("seq", seq, batch, steps)?;
        self.lstm.check_memory(batch, steps)?;
        self.run_forward(seq, batch, steps)?;
        Ok(&self.pred)
    }

    /// The seed's cost of the last prediction against `target` (B, T, O),
    /// and its gradient into `d_pred`. Summed in f64.
    fn cost_and_grad(&mut self, target: &[T], batch: usize) -> f64 {
        self.d_pred.resize(self.pred.len(), T::ZERO);
        let scale = T::from_f64(2.0 / batch as f64);
        let mut sum = 0.0f64;
        for ((d, &p), &y) in self.d_pred.iter_mut().zip(&self.pred).zip(target) {
            let diff = p - y;
            sum += (diff * diff).to_f64();
            *d = scale * diff;
        }
        sum / batch as f64
    }

    /// Cost and gradients for one batch, without updating anything but the
    /// gradients and the workspaces. Returns the cost; [`Error::Diverged`]
    /// if the cost or a gradient is not finite.
    pub fn loss_and_grads(&mut self, seq: &[T], target: &[T], batch: usize, steps: usize) -> Result<f64> {
        let cost = self.cost_and_grads(seq, target, batch, steps)?;
        self.check_grads()?;
        Ok(cost)
    }

    /// [`Self::loss_and_grads`] without the gradients' finiteness check
    /// (train_step's Adam check covers them: a non-finite gradient makes a
    /// non-finite moment).
    fn cost_and_grads(&mut self, seq: &[T], target: &[T], batch: usize, steps: usize) -> Result<f64> {
        self.check_inputs("seq", seq, batch, steps)?;
        check_len("res", target, &[batch, steps, self.config.output_size])?;
        check_finite("res", target)?;
        self.lstm.check_memory(batch, steps)?;
        self.run_forward(seq, batch, steps)?;
        let cost = self.cost_and_grad(target, batch);
        if !cost.is_finite() {
            return Err(Error::Diverged(format!(
                "the cost is not finite ({cost}): predictions and targets too far apart \
                 for {} (the learning rate may be too large)",
                T::NAME
            )));
        }
        self.run_backward()?;
        Ok(cost)
    }

    /// [`Error::Diverged`] naming the first gradient that is not finite.
    fn check_grads(&self) -> Result<()> {
        match check_finite("", &self.grads) {
            Err(Error::NonFinite { index, .. }) => Err(Error::Diverged(format!(
                "the gradient of {} is not finite",
                self.param_at(index)
            ))),
            _ => Ok(()),
        }
    }

    /// Names flat parameter index `index`: `'lstm.bias'[3]`.
    fn param_at(&self, index: usize) -> String {
        let ranges = self.config.param_ranges();
        let k = ranges.iter().rposition(|&(offset, _)| offset <= index).unwrap_or(0);
        format!("'{}'[{}]", PARAM_NAMES[k], index - ranges[k].0)
    }

    fn run_backward(&mut self) -> Result<()> {
        let c = self.config;
        let (i_n, h_n) = (c.input_size, c.hidden_size);
        let p = split(&c, &self.params);
        let g = split_mut(&c, &mut self.grads);
        // The kernel's gradient by b_x is the gradient by b itself.
        self.lstm.run_backward_dense(
            LstmParams {
                weight_ih: &self.w_x,
                weight_hh: p.w_hh,
                bias: &self.b_x,
            },
            Dense {
                weight: p.out_w,
                bias: p.out_b,
            },
            &self.d_pred,
            g.out_w,
            g.out_b,
            LstmGrads {
                weight_ih: &mut self.grad_w_x,
                weight_hh: g.w_hh,
                bias: g.lstm_b,
            },
        )?;
        // Chain rule through W_x = W_ih·W_in and b_x = W_ih·b_in + b:
        //   dW_ih = dW_x·W_inᵀ + db_x ⊗ b_in   (4H, H)
        //   dW_in = W_ihᵀ·dW_x                 (H, I)
        //   db_in = W_ihᵀ·db_x                 (H,)
        let (gw_x, gb_x) = (&self.grad_w_x, &*g.lstm_b);
        for r in 0..4 * h_n {
            for k in 0..h_n {
                let from_w: T = (0..i_n).fold(T::ZERO, |acc, i| acc + gw_x[r * i_n + i] * p.in_w[k * i_n + i]);
                g.w_ih[r * h_n + k] = from_w + gb_x[r] * p.in_b[k];
            }
        }
        for k in 0..h_n {
            for i in 0..i_n {
                g.in_w[k * i_n + i] =
                    (0..4 * h_n).fold(T::ZERO, |acc, r| acc + p.w_ih[r * h_n + k] * gw_x[r * i_n + i]);
            }
            g.in_b[k] = (0..4 * h_n).fold(T::ZERO, |acc, r| acc + p.w_ih[r * h_n + k] * gb_x[r]);
        }
        Ok(())
    }

    /// One training step on `seq` (B, T, I) → `target` (B, T, O): forward
    /// from the carried state, cost, backward through time (truncated at
    /// the batch), one Adam update, and the final (h, c) carried to the next
    /// step. Returns the cost before the update. On error nothing changes:
    /// bad input is [`Error::Shape`] / [`Error::NonFinite`], a cost,
    /// gradient, update or state that would not be finite is
    /// [`Error::Diverged`].
    pub fn train_step(&mut self, seq: &[T], target: &[T], batch: usize, steps: usize) -> Result<f64> {
        let cost = self.cost_and_grads(seq, target, batch, steps)?;
        self.check_final_state()?;
        if let Some(index) = self.adam.update_if_finite(&mut self.params, &self.grads)? {
            self.check_grads()?; // the cause, if it is a gradient
            return Err(Error::Diverged(format!(
                "the Adam update of {} (or its moments) would not be finite in {} \
                 (the learning rate may be too large)",
                self.param_at(index),
                T::NAME
            )));
        }
        // Keep this step's prediction; swapping buffers copies nothing.
        std::mem::swap(&mut self.pred, &mut self.train_pred);
        self.train_shape = Some((batch, steps));
        self.carry_final_state();
        Ok(cost)
    }

    /// One time step for streaming: `x_t` (B, I) from the carried state (or
    /// zeros) to pred (B, O); the state after the step is carried to the
    /// next call (and to a training step). On error nothing changes.
    pub fn predict_step(&mut self, x_t: &[T], batch: usize) -> Result<&[T]> {
        self.check_inputs("x_t", x_t, batch, 1)?;
        self.lstm.check_memory(batch, 1)?;
        self.run_forward(x_t, batch, 1)?;
        self.check_final_state()?;
        self.carry_final_state();
        Ok(&self.pred)
    }

    /// [`Error::Diverged`] if the LSTM's final (h, c) is not finite: it
    /// would become a carried state that no checkpoint could hold.
    fn check_final_state(&self) -> Result<()> {
        let (h_n, c_n) = self.lstm.final_state();
        if check_finite("", h_n).and(check_finite("", c_n)).is_err() {
            return Err(Error::Diverged("the new LSTM state (h, c) is not finite".into()));
        }
        Ok(())
    }

    /// The LSTM's final (h, c) becomes the carried state.
    fn carry_final_state(&mut self) {
        let (h_n, c_n) = self.lstm.final_state();
        match &mut self.state {
            Some((h, c)) if h.len() == h_n.len() => {
                h.copy_from_slice(h_n);
                c.copy_from_slice(c_n);
            }
            slot => *slot = Some((h_n.to_vec(), c_n.to_vec())),
        }
    }
}

/// Deterministic pseudo-random parameters for tests and benchmarks (not the
/// seed's initialisation, which the Python package does; see
/// `python/sincos_rs/init.py`): weights uniform in ±1/√fan_in, biases 0.1,
/// the forget-gate bias `forget_bias`.
pub fn demo_params<T: Real>(config: &SeedConfig, forget_bias: f64, seed: u64) -> Vec<T> {
    let mut rng = SplitMix64(seed);
    let mut flat = vec![T::ZERO; config.num_params()];
    let h = config.hidden_size;
    let p = split_mut(config, &mut flat);
    let fill = |w: &mut [T], fan_in: usize, rng: &mut SplitMix64| {
        let a = 1.0 / (fan_in as f64).sqrt();
        w.iter_mut()
            .for_each(|x| *x = T::from_f64(a * (2.0 * rng.next_f64() - 1.0)));
    };
    fill(p.in_w, config.input_size, &mut rng);
    fill(p.w_ih, h, &mut rng);
    fill(p.w_hh, h, &mut rng);
    fill(p.out_w, h, &mut rng);
    p.in_b.fill(T::from_f64(0.1));
    p.out_b.fill(T::from_f64(0.1));
    p.lstm_b.fill(T::ZERO);
    p.lstm_b[h..2 * h].fill(T::from_f64(forget_bias));
    flat
}

/// A tiny, well-known PRNG (Steele et al.), for [`demo_params`].
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
