//! Adam's binding, `AdamCore` (what `sincos_rs.Adam` wraps): one update
//! over many arrays, checked in full before any is written.

use numpy::{Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFloatingPointError, PyValueError};
use pyo3::prelude::*;

use super::checks::{
    array_arg, borrow_read, borrow_write, check_finite_named, check_no_aliasing, check_shape, parse_dtype, parse_style,
    shape_str, to_py_err, ArrayUse, DType,
};
use crate::adam::{adam_update as core_adam_update, adam_update_check, AdamCoefficients, AdamConfig};
use crate::simd::Real;

/// One array's Adam update, checked, not yet borrowed: param, grad, m, v.
struct AdamArgs<'py, T: Element> {
    name: String,
    param: Bound<'py, PyArrayDyn<T>>,
    grad: Bound<'py, PyArrayDyn<T>>,
    m: Bound<'py, PyArrayDyn<T>>,
    v: Bound<'py, PyArrayDyn<T>>,
}

impl<'py, T: Element + Real> AdamArgs<'py, T> {
    /// Checks entry `name` (its param of dtype T): every way an array can be
    /// wrong is an exception naming it (`grads['name']`, ...).
    fn new(
        name: &str,
        param: &Bound<'py, PyAny>,
        grad: &Bound<'py, PyAny>,
        m: &Bound<'py, PyAny>,
        v: &Bound<'py, PyAny>,
    ) -> PyResult<Self> {
        let param = array_arg::<T>(param, &format!("params['{name}']"), None)?;
        let shape = param.shape().to_vec();
        let grad_label = format!("grads['{name}']");
        let grad = array_arg::<T>(grad, &grad_label, None).map_err(|e| {
            PyValueError::new_err(format!(
                "{grad_label}: expected a C-contiguous {} array of shape {} ({})",
                T::NAME,
                shape_str(&shape),
                e.value(param.py())
            ))
        })?;
        check_shape(&grad_label, grad.shape(), &shape)?;
        let m_label = format!("m['{name}']");
        let m = array_arg::<T>(m, &m_label, None)?;
        check_shape(&m_label, m.shape(), &shape)?;
        let v_label = format!("v['{name}']");
        let v = array_arg::<T>(v, &v_label, None)?;
        check_shape(&v_label, v.shape(), &shape)?;
        Ok(AdamArgs {
            name: name.to_owned(),
            param,
            grad,
            m,
            v,
        })
    }

    /// Its arrays for [`check_no_aliasing`].
    fn uses(&self) -> [ArrayUse<'_, 'py>; 4] {
        let n = &self.name;
        [
            ArrayUse {
                name: format!("params['{n}']"),
                array: self.param.as_untyped(),
                written: true,
            },
            ArrayUse {
                name: format!("grads['{n}']"),
                array: self.grad.as_untyped(),
                written: false,
            },
            ArrayUse {
                name: format!("m['{n}']"),
                array: self.m.as_untyped(),
                written: true,
            },
            ArrayUse {
                name: format!("v['{n}']"),
                array: self.v.as_untyped(),
                written: true,
            },
        ]
    }

    /// Borrows the four arrays; the gradient must be finite.
    fn borrow(&self) -> PyResult<AdamViews<'py, T>> {
        let n = &self.name;
        let grad = borrow_read(&self.grad, &format!("grads['{n}']"))?;
        check_finite_named(&format!("grads['{n}']"), grad.as_slice()?)?;
        Ok(AdamViews {
            name: n.clone(),
            param: borrow_write(&self.param, &format!("params['{n}']"))?,
            grad,
            m: borrow_write(&self.m, &format!("m['{n}']"))?,
            v: borrow_write(&self.v, &format!("v['{n}']"))?,
        })
    }
}

/// One entry's borrowed arrays.
struct AdamViews<'py, T: Element> {
    name: String,
    param: PyReadwriteArrayDyn<'py, T>,
    grad: PyReadonlyArrayDyn<'py, T>,
    m: PyReadwriteArrayDyn<'py, T>,
    v: PyReadwriteArrayDyn<'py, T>,
}

impl<T: Element + Real> AdamViews<'_, T> {
    /// Which of the parameter and its moments already holds a value the
    /// update cannot take at `index` (NaN or inf; v < 0), as a message.
    fn bad_value_at(&self, index: usize) -> Option<String> {
        let n = &self.name;
        let at = |a: &PyReadwriteArrayDyn<'_, T>| a.as_slice().ok().and_then(|s| s.get(index).copied());
        let (p, m, v) = (at(&self.param)?, at(&self.m)?, at(&self.v)?);
        if !p.is_finite() {
            Some(format!("params['{n}']: holds NaN or inf"))
        } else if !m.is_finite() {
            Some(format!("m['{n}']: holds NaN or inf"))
        } else if !v.is_finite() {
            Some(format!("v['{n}']: holds NaN or inf"))
        } else if v < T::ZERO {
            Some(format!("v['{n}']: holds a negative second moment"))
        } else {
            None
        }
    }
}

/// param, grad, m, v of one Adam entry, with its name.
type AdamSlices<'a, T> = (&'a str, &'a mut [T], &'a [T], &'a mut [T], &'a mut [T]);

fn adam_slices<'a, T: Element + Real>(views: &'a mut [AdamViews<'_, T>]) -> PyResult<Vec<AdamSlices<'a, T>>> {
    views
        .iter_mut()
        .map(|e| {
            Ok((
                e.name.as_str(),
                e.param.as_slice_mut()?,
                e.grad.as_slice()?,
                e.m.as_slice_mut()?,
                e.v.as_slice_mut()?,
            ))
        })
        .collect()
}

/// The name and flat index of the first entry whose update would not be
/// finite, if any.
fn first_non_finite<T: Real>(entries: &[AdamSlices<'_, T>], k: &AdamCoefficients<T>) -> Option<(String, usize)> {
    entries.iter().find_map(|(name, p, g, m, v)| {
        // The lengths were checked with the shapes: no error here.
        match adam_update_check(p, g, m, v, k) {
            Ok(Some(index)) => Some((name.to_string(), index)),
            _ => None,
        }
    })
}

/// The settings of one Adam update, checked for the parameters' dtypes: lr
/// and eps finite and > 0 once rounded to each (ValueError naming them).
fn adam_config(
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    eps_style: &str,
    dtypes: impl IntoIterator<Item = DType>,
) -> PyResult<AdamConfig> {
    let config = AdamConfig {
        lr,
        beta1,
        beta2,
        eps,
        style: parse_style(eps_style)?,
    };
    config.validate().map_err(to_py_err)?;
    for dtype in dtypes {
        match dtype {
            DType::F32 => config.validate_for::<f32>(),
            DType::F64 => config.validate_for::<f64>(),
        }
        .map_err(to_py_err)?;
    }
    Ok(config)
}

/// Checks Adam's settings for parameters of the given dtypes
/// ("float32"/"float64"); ValueError naming the first bad one.
#[pyfunction]
#[pyo3(signature = (*, lr, beta1, beta2, eps, eps_style, dtypes))]
pub(super) fn check_adam_config(
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    eps_style: &str,
    dtypes: Vec<String>,
) -> PyResult<()> {
    let dtypes = dtypes.iter().map(|d| parse_dtype(d)).collect::<PyResult<Vec<_>>>()?;
    adam_config(lr, beta1, beta2, eps, eps_style, dtypes).map(|_| ())
}

/// Adam's step count; the moments are NumPy arrays and the settings
/// attributes of `sincos_rs.Adam`, which wraps this. The count lives here so
/// that an update and its count change in one call (a Ctrl-C between two
/// Python statements cannot split them).
#[pyclass(module = "sincos_rs._core")]
pub(super) struct AdamCore {
    step: u64,
}

#[pymethods]
impl AdamCore {
    #[new]
    fn new() -> Self {
        AdamCore { step: 0 }
    }

    /// The number of updates done.
    #[getter]
    fn step_count(&self) -> u64 {
        self.step
    }

    /// Sets the number of updates done (restoring a state).
    fn set_step_count(&mut self, step: u64) {
        self.step = step;
    }

    /// One fused update of every array `params[i]` in place (with its
    /// moments `ms[i]`, `vs[i]`) by `grads[i]`, and the step count + 1, in
    /// one call. Parameters may mix float32 and float64. All or nothing:
    /// every array is checked first (types, shapes, no array written here
    /// sharing memory with another, finite gradients, and an update that
    /// stays finite: FloatingPointError otherwise), then all are updated
    /// without the GIL.
    #[pyo3(signature = (names, params, grads, ms, vs, *, lr, beta1, beta2, eps, eps_style))]
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        py: Python<'_>,
        names: Vec<String>,
        params: Vec<Bound<'_, PyAny>>,
        grads: Vec<Bound<'_, PyAny>>,
        ms: Vec<Bound<'_, PyAny>>,
        vs: Vec<Bound<'_, PyAny>>,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        eps_style: &str,
    ) -> PyResult<()> {
        let n = names.len();
        if [params.len(), grads.len(), ms.len(), vs.len()] != [n; 4] {
            return Err(PyValueError::new_err(format!(
                "names, params, grads, ms, vs: expected {n} of each, got {}, {}, {}, {}",
                params.len(),
                grads.len(),
                ms.len(),
                vs.len()
            )));
        }
        let step = self
            .step
            .checked_add(1)
            .ok_or_else(|| PyValueError::new_err("step count: no more updates fit in 64 bits"))?;
        let (mut args32, mut args64) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (name, p) = (&names[i], &params[i]);
            if p.cast::<PyArrayDyn<f64>>().is_ok() {
                args64.push(AdamArgs::<f64>::new(name, p, &grads[i], &ms[i], &vs[i])?);
            } else {
                args32.push(AdamArgs::<f32>::new(name, p, &grads[i], &ms[i], &vs[i])?);
            }
        }
        let dtypes = [(!args32.is_empty(), DType::F32), (!args64.is_empty(), DType::F64)];
        let config = adam_config(
            lr,
            beta1,
            beta2,
            eps,
            eps_style,
            dtypes.into_iter().filter_map(|(used, d)| used.then_some(d)),
        )?;
        let uses: Vec<ArrayUse> = args32
            .iter()
            .flat_map(AdamArgs::uses)
            .chain(args64.iter().flat_map(AdamArgs::uses))
            .collect();
        check_no_aliasing(&uses)?;
        let mut views32 = args32.iter().map(AdamArgs::borrow).collect::<PyResult<Vec<_>>>()?;
        let mut views64 = args64.iter().map(AdamArgs::borrow).collect::<PyResult<Vec<_>>>()?;
        let (s32, s64) = (adam_slices(&mut views32)?, adam_slices(&mut views64)?);
        let (k32, k64) = (
            AdamCoefficients::<f32>::new(&config, step),
            AdamCoefficients::<f64>::new(&config, step),
        );
        let bad = py
            .detach(|| {
                let bad = first_non_finite(&s32, &k32).or_else(|| first_non_finite(&s64, &k64));
                if bad.is_none() {
                    for (_, p, g, m, v) in s32 {
                        core_adam_update(p, g, m, v, &k32)?;
                    }
                    for (_, p, g, m, v) in s64 {
                        core_adam_update(p, g, m, v, &k64)?;
                    }
                }
                Ok(bad)
            })
            .map_err(to_py_err)?;
        if let Some((name, index)) = bad {
            // A value that was not finite before the update is bad input,
            // not a divergence: name the array that holds it.
            let held = views32
                .iter()
                .find_map(|e| (e.name == name).then(|| e.bad_value_at(index)))
                .or_else(|| {
                    views64
                        .iter()
                        .find_map(|e| (e.name == name).then(|| e.bad_value_at(index)))
                })
                .flatten();
            if let Some(what) = held {
                return Err(PyValueError::new_err(format!(
                    "{what} at flat index {index} (written from outside the optimiser?): \
                     nothing was changed"
                )));
            }
            return Err(PyFloatingPointError::new_err(format!(
                "params['{name}']: the Adam update would make it or its moments NaN or inf \
                 (flat index {index}; the learning rate or the gradient may be too large): \
                 nothing was changed"
            )));
        }
        self.step = step;
        Ok(())
    }
}
