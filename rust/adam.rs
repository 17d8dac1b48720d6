//! Adam, fused and in place.
//!
//! Two placements of ε are offered, because they give measurably different
//! training curves (about 1.7 % apart in cost after 400 seed iterations):
//!
//! ```text
//! m = β1·m + (1−β1)·g        v = β2·v + (1−β2)·g²        (t = 1, 2, ...)
//! TensorFlow: θ −= lr·√(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε)          (the default)
//! PyTorch:    θ −= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
//! ```
//!
//! Scalars are computed in f64 and rounded to the element type once; the
//! element-wise work is in the element type.
//!
//! An update is all or nothing: [`Adam::update`] first checks that every new
//! parameter and moment would be finite ([`adam_update_check`]), and only
//! then writes them; otherwise it returns [`Error::Diverged`] with nothing
//! changed. The check runs the same arithmetic as the update, so it cannot
//! disagree with it.

use crate::error::{check_len, Error, Result};
use crate::simd::Real;

/// Where ε enters the update (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EpsilonStyle {
    /// TensorFlow's `AdamOptimizer`: ε outside the bias correction.
    #[default]
    TensorFlow,
    /// PyTorch's `torch.optim.Adam`: ε added to the bias-corrected √v̂.
    PyTorch,
}

/// Adam's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub style: EpsilonStyle,
}

impl Default for AdamConfig {
    /// TensorFlow's defaults with the seed's learning rate 0.006.
    fn default() -> Self {
        AdamConfig {
            lr: 0.006,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            style: EpsilonStyle::TensorFlow,
        }
    }
}

impl AdamConfig {
    /// Checks the ranges: lr > 0, 0 ≤ β < 1, ε > 0, all finite. (ε = 0
    /// would turn a parameter whose gradients were all exactly 0 into NaN,
    /// 0 / 0.)
    pub fn validate(&self) -> Result<()> {
        let bad = |arg: &'static str, expected: &str, got: f64| {
            Err(Error::Config {
                arg,
                expected: expected.into(),
                got: got.to_string(),
            })
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "a finite number > 0", self.lr);
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("beta1", "a number in [0, 1)", self.beta1);
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2", "a number in [0, 1)", self.beta2);
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", "a finite number > 0", self.eps);
        }
        Ok(())
    }

    /// [`Self::validate`], and lr and ε still finite and > 0 once rounded
    /// to `T` (1e39 is inf in f32, 1e-50 is 0).
    pub fn validate_for<T: Real>(&self) -> Result<()> {
        self.validate()?;
        for (arg, value) in [("lr", self.lr), ("eps", self.eps)] {
            let rounded = T::from_f64(value);
            if !(rounded.is_finite() && rounded > T::ZERO) {
                return Err(Error::Config {
                    arg,
                    expected: format!("a number that is finite and > 0 in {}", T::NAME),
                    got: format!("{value:e}"),
                });
            }
        }
        Ok(())
    }
}

/// The per-step scalars of one update, already in the element type.
#[derive(Clone, Copy, Debug)]
pub struct AdamCoefficients<T> {
    beta1: T,
    one_minus_beta1: T,
    beta2: T,
    one_minus_beta2: T,
    /// Multiplies m.
    step_size: T,
    /// Divides √v (1 for TensorFlow's placement).
    sqrt_bias2: T,
    eps: T,
    style: EpsilonStyle,
}

impl<T: Real> AdamCoefficients<T> {
    /// The scalars for update number `step` (1 for the first update).
    pub fn new(cfg: &AdamConfig, step: u64) -> Self {
        let t = step.min(i32::MAX as u64) as i32;
        let bias1 = 1.0 - cfg.beta1.powi(t);
        let bias2 = 1.0 - cfg.beta2.powi(t);
        let (step_size, sqrt_bias2) = match cfg.style {
            EpsilonStyle::TensorFlow => (cfg.lr * bias2.sqrt() / bias1, 1.0),
            EpsilonStyle::PyTorch => (cfg.lr / bias1, bias2.sqrt()),
        };
        AdamCoefficients {
            beta1: T::from_f64(cfg.beta1),
            one_minus_beta1: T::from_f64(1.0 - cfg.beta1),
            beta2: T::from_f64(cfg.beta2),
            one_minus_beta2: T::from_f64(1.0 - cfg.beta2),
            step_size: T::from_f64(step_size),
            sqrt_bias2: T::from_f64(sqrt_bias2),
            eps: T::from_f64(cfg.eps),
            style: cfg.style,
        }
    }
}

/// One element's update: the new (param, m, v). `PYTORCH` selects where ε
/// goes (a constant, so each style's loop has no branch in it).
#[inline(always)]
fn adam_element<T: Real, const PYTORCH: bool>(p: T, g: T, m: T, v: T, k: &AdamCoefficients<T>) -> (T, T, T) {
    let m = k.beta1 * m + k.one_minus_beta1 * g;
    let v = k.beta2 * v + k.one_minus_beta2 * (g * g);
    let denominator = if PYTORCH {
        v.sqrt() / k.sqrt_bias2 + k.eps
    } else {
        v.sqrt() + k.eps
    };
    (p - k.step_size * m / denominator, m, v)
}

/// One fused Adam update of `param` in place, with its moments `m` and `v`
/// (all four slices the same length). Unchecked: see [`adam_update_check`].
pub fn adam_update<T: Real>(
    param: &mut [T],
    grad: &[T],
    m: &mut [T],
    v: &mut [T],
    k: &AdamCoefficients<T>,
) -> Result<()> {
    fn run<T: Real, const PYTORCH: bool>(
        param: &mut [T],
        grad: &[T],
        m: &mut [T],
        v: &mut [T],
        k: &AdamCoefficients<T>,
    ) {
        for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
            (*p, *m, *v) = adam_element::<T, PYTORCH>(*p, g, *m, *v, k);
        }
    }
    check_lens(param, grad, m, v)?;
    match k.style {
        EpsilonStyle::TensorFlow => run::<T, false>(param, grad, m, v, k),
        EpsilonStyle::PyTorch => run::<T, true>(param, grad, m, v, k),
    }
    Ok(())
}

/// Whether [`adam_update`] with the same arguments would leave every
/// parameter and moment finite: `Ok(None)` if so, else `Ok(Some(i))` with
/// the first flat index where it would not. Writes nothing.
pub fn adam_update_check<T: Real>(
    param: &[T],
    grad: &[T],
    m: &[T],
    v: &[T],
    k: &AdamCoefficients<T>,
) -> Result<Option<usize>> {
    fn all_finite<T: Real, const PYTORCH: bool>(
        param: &[T],
        grad: &[T],
        m: &[T],
        v: &[T],
        k: &AdamCoefficients<T>,
    ) -> bool {
        // A non-finite m makes p non-finite (m / (sqrt(v) + eps)), so p and
        // v tell. Blocks of W independent flags and no early exit: the
        // block's loop becomes vector instructions.
        const W: usize = 16;
        let mut finite = [true; W];
        let blocks = param.len() / W * W;
        for b in (0..blocks).step_by(W) {
            let (p, g, m, v) = (&param[b..b + W], &grad[b..b + W], &m[b..b + W], &v[b..b + W]);
            for j in 0..W {
                let (p, _, v) = adam_element::<T, PYTORCH>(p[j], g[j], m[j], v[j], k);
                finite[j] &= p.is_finite() & v.is_finite();
            }
        }
        let tail = (blocks..param.len()).all(|i| {
            let (p, _, v) = adam_element::<T, PYTORCH>(param[i], grad[i], m[i], v[i], k);
            p.is_finite() & v.is_finite()
        });
        tail && finite.iter().all(|&f| f)
    }
    check_lens(param, grad, m, v)?;
    let finite = match k.style {
        EpsilonStyle::TensorFlow => all_finite::<T, false>(param, grad, m, v, k),
        EpsilonStyle::PyTorch => all_finite::<T, true>(param, grad, m, v, k),
    };
    if finite {
        return Ok(None);
    }
    // The rare path: find where.
    let pytorch = k.style == EpsilonStyle::PyTorch;
    Ok((0..param.len()).find(|&i| {
        let (p, m, v) = if pytorch {
            adam_element::<T, true>(param[i], grad[i], m[i], v[i], k)
        } else {
            adam_element::<T, false>(param[i], grad[i], m[i], v[i], k)
        };
        !(p.is_finite() && m.is_finite() && v.is_finite())
    }))
}

fn check_lens<T>(param: &[T], grad: &[T], m: &[T], v: &[T]) -> Result<()> {
    let n = param.len();
    check_len("grad", grad, &[n])?;
    check_len("m", m, &[n])?;
    check_len("v", v, &[n])
}

/// Adam over one flat parameter vector: its moments and step count.
#[derive(Clone, Debug)]
pub struct Adam<T> {
    pub config: AdamConfig,
    /// First and second moments, one per parameter.
    pub m: Vec<T>,
    pub v: Vec<T>,
    /// Updates done so far.
    pub step: u64,
}

impl<T: Real> Adam<T> {
    /// Fresh moments for `len` parameters.
    pub fn new(config: AdamConfig, len: usize) -> Result<Self> {
        config.validate_for::<T>()?;
        Ok(Adam {
            config,
            m: vec![T::ZERO; len],
            v: vec![T::ZERO; len],
            step: 0,
        })
    }

    /// Applies one update to `params` given `grads` (same length as the
    /// moments). If a new parameter or moment would not be finite, returns
    /// [`Error::Diverged`] naming its flat index, and changes nothing.
    pub fn update(&mut self, params: &mut [T], grads: &[T]) -> Result<()> {
        match self.update_if_finite(params, grads)? {
            None => Ok(()),
            Some(index) => Err(Error::Diverged(format!(
                "the Adam update would make parameter {index} or its moments NaN or inf"
            ))),
        }
    }

    /// [`Self::update`], returning `Some(flat index)` instead of an error
    /// when the update would not be finite (and then changing nothing).
    pub fn update_if_finite(&mut self, params: &mut [T], grads: &[T]) -> Result<Option<usize>> {
        check_len("params", params, &[self.m.len()])?;
        let k = AdamCoefficients::new(&self.config, self.step + 1);
        if let Some(index) = adam_update_check(params, grads, &self.m, &self.v, &k)? {
            return Ok(Some(index));
        }
        adam_update(params, grads, &mut self.m, &mut self.v, &k)?;
        self.step += 1;
        Ok(None)
    }
}
