//! The seed network's binding, `SeedNetworkCore` (what
//! `sincos_rs.LSTMRegressor` wraps): Linear → LSTM → Linear with Adam and a
//! carried state, in float32 or float64.

use numpy::{Element, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::checks::{
    check_finite_named, check_shape, new_array, parse_dtype, parse_style, read_array, shape_str, to_py_err, DType,
};
use super::gil::{step_macs, STEP_GIL_MACS};
use crate::adam::AdamConfig;
use crate::model::{SeedConfig, SeedNetwork, PARAM_NAMES};
use crate::simd::Real;

enum Net {
    F32(SeedNetwork<f32>),
    F64(SeedNetwork<f64>),
}

/// Runs `$body` with `$net` bound to the typed network and `$t` to its type.
macro_rules! with_net {
    ($self:expr, $net:ident, $t:ident => $body:expr) => {
        match &mut $self.net {
            Net::F32($net) => {
                type $t = f32;
                $body
            }
            Net::F64($net) => {
                type $t = f64;
                $body
            }
        }
    };
}

/// The seed network (Linear → LSTM → Linear) with Adam and a carried state.
/// Use `sincos_rs.LSTMRegressor`, which wraps this.
#[pyclass(module = "sincos_rs._core")]
pub(super) struct SeedNetworkCore {
    net: Net,
}

fn flat_params<'py, T: Element + Real>(
    config: &SeedConfig,
    params: &Bound<'py, PyDict>,
    what: &str,
) -> PyResult<Vec<T>> {
    let mut flat = Vec::with_capacity(config.num_params());
    for (name, shape) in PARAM_NAMES.iter().zip(config.param_shapes()) {
        let label = format!("{what}[{name:?}]");
        let value = params
            .get_item(name)?
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(format!("{what}: missing key {name:?}")))?;
        let array = read_array::<T>(&value, &label, shape.len())?;
        check_shape(&label, array.shape(), &shape)?;
        let data = array.as_slice()?;
        check_finite_named(&label, data)?;
        flat.extend_from_slice(data);
    }
    // Any other key, a name that is not a str included (7, or b"input.bias").
    if let Some(extra) = params.keys().iter().find(|k| {
        k.extract::<String>()
            .map_or(true, |k| !PARAM_NAMES.contains(&k.as_str()))
    }) {
        let extra = extra.repr().map_or_else(|_| "?".to_string(), |r| r.to_string());
        return Err(pyo3::exceptions::PyKeyError::new_err(format!(
            "{what}: unexpected key {extra} (expected {})",
            PARAM_NAMES.join(", ")
        )));
    }
    Ok(flat)
}

fn params_dict<'py, T: Element + Real>(
    py: Python<'py>,
    config: &SeedConfig,
    flat: &[T],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for ((name, shape), (offset, len)) in PARAM_NAMES.iter().zip(config.param_shapes()).zip(config.param_ranges()) {
        dict.set_item(name, new_array(py, &flat[offset..offset + len], &shape)?)?;
    }
    Ok(dict)
}

/// Reads (seq, res) for the network: seq (B, T, I), res (B, T, O).
fn seq_shape(net_config: &SeedConfig, seq: &[usize]) -> PyResult<(usize, usize)> {
    if seq[2] != net_config.input_size || seq[0] == 0 || seq[1] == 0 {
        return Err(PyValueError::new_err(format!(
            "seq: expected shape (B, T, {}) with B, T >= 1, got {}",
            net_config.input_size,
            shape_str(seq)
        )));
    }
    Ok((seq[0], seq[1]))
}

#[pymethods]
impl SeedNetworkCore {
    /// `params`: dict name → array (see PARAM_NAMES), in the network's dtype.
    #[new]
    #[pyo3(signature = (input_size, hidden_size, output_size, params, *, dtype, lr, beta1, beta2, eps, eps_style))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        input_size: usize,
        hidden_size: usize,
        output_size: usize,
        params: &Bound<'_, PyDict>,
        dtype: &str,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        eps_style: &str,
    ) -> PyResult<Self> {
        let config = SeedConfig {
            input_size,
            hidden_size,
            output_size,
        };
        for (arg, v) in [
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("output_size", output_size),
        ] {
            if v == 0 {
                return Err(PyValueError::new_err(format!(
                    "{arg}: expected a positive integer, got 0"
                )));
            }
        }
        // Before flat_params sizes a vector from them.
        config.validate().map_err(to_py_err)?;
        let adam = AdamConfig {
            lr,
            beta1,
            beta2,
            eps,
            style: parse_style(eps_style)?,
        };
        adam.validate().map_err(to_py_err)?;
        let net = match parse_dtype(dtype)? {
            DType::F32 => {
                Net::F32(SeedNetwork::new(config, adam, flat_params(&config, params, "params")?).map_err(to_py_err)?)
            }
            DType::F64 => {
                Net::F64(SeedNetwork::new(config, adam, flat_params(&config, params, "params")?).map_err(to_py_err)?)
            }
        };
        Ok(SeedNetworkCore { net })
    }

    /// One training step; returns the cost before the update.
    fn train_step(&mut self, py: Python<'_>, seq: &Bound<'_, PyAny>, res: &Bound<'_, PyAny>) -> PyResult<f64> {
        with_net!(self, net, T => {
            let config = net.config();
            let seq = read_array::<T>(seq, "seq", 3)?;
            let res = read_array::<T>(res, "res", 3)?;
            let (batch, steps) = seq_shape(&config, seq.shape())?;
            check_shape("res", res.shape(), &[batch, steps, config.output_size])?;
            let (x, y) = (seq.as_slice()?, res.as_slice()?);
            py.detach(|| net.train_step(x, y, batch, steps)).map_err(to_py_err)
        })
    }

    /// Cost and gradients (dict) for one batch; parameters and state unchanged.
    fn loss_and_grads<'py>(
        &mut self,
        py: Python<'py>,
        seq: &Bound<'py, PyAny>,
        res: &Bound<'py, PyAny>,
    ) -> PyResult<(f64, Bound<'py, PyDict>)> {
        with_net!(self, net, T => {
            let config = net.config();
            let seq = read_array::<T>(seq, "seq", 3)?;
            let res = read_array::<T>(res, "res", 3)?;
            let (batch, steps) = seq_shape(&config, seq.shape())?;
            check_shape("res", res.shape(), &[batch, steps, config.output_size])?;
            let (x, y) = (seq.as_slice()?, res.as_slice()?);
            let cost = py.detach(|| net.loss_and_grads(x, y, batch, steps)).map_err(to_py_err)?;
            Ok((cost, params_dict(py, &config, net.grads())?))
        })
    }

    /// Prediction (B, T, O) from the carried state; the state is not changed.
    fn predict<'py>(&mut self, py: Python<'py>, seq: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        with_net!(self, net, T => {
            let config = net.config();
            let seq = read_array::<T>(seq, "seq", 3)?;
            let (batch, steps) = seq_shape(&config, seq.shape())?;
            let x = seq.as_slice()?;
            let pred = py.detach(|| net.predict(x, batch, steps).map(|p| p.to_vec())).map_err(to_py_err)?;
            Ok(new_array(py, &pred, &[batch, steps, config.output_size])?.into_any())
        })
    }

    /// One step (B, I) -> (B, O) from the carried state, which it advances.
    fn predict_step<'py>(&mut self, py: Python<'py>, x_t: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        with_net!(self, net, T => {
            let config = net.config();
            let x = read_array::<T>(x_t, "x_t", 2)?;
            let shape = x.shape().to_vec();
            if shape[1] != config.input_size || shape[0] == 0 {
                return Err(PyValueError::new_err(format!(
                    "x_t: expected shape (B, {}) with B >= 1, got {}",
                    config.input_size,
                    shape_str(&shape)
                )));
            }
            let xs = x.as_slice()?;
            let (b, o) = (shape[0], config.output_size);
            // As `lstm_step`: a large step lets other threads run.
            if step_macs(b, config.input_size, config.hidden_size) < STEP_GIL_MACS {
                let pred = net.predict_step(xs, b).map_err(to_py_err)?;
                Ok(new_array(py, pred, &[b, o])?.into_any())
            } else {
                let pred = py.detach(|| net.predict_step(xs, b).map(|p| p.to_vec())).map_err(to_py_err)?;
                Ok(new_array(py, &pred, &[b, o])?.into_any())
            }
        })
    }

    /// The prediction (B, T, O) made during the last training step, or None.
    fn last_prediction<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        with_net!(self, net, T => {
            let o = net.config().output_size;
            match net.last_prediction() {
                None => Ok(None),
                Some((pred, batch, steps)) => {
                    let pred: &[T] = pred;
                    Ok(Some(new_array(py, pred, &[batch, steps, o])?.into_any()))
                }
            }
        })
    }

    /// Copies of the parameters, by name.
    fn get_params<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        with_net!(self, net, T => {
            let _: &[T] = net.params();
            params_dict(py, &net.config(), net.params())
        })
    }

    /// Replaces all parameters (dict by name); checked before anything changes.
    fn set_params(&mut self, params: &Bound<'_, PyDict>) -> PyResult<()> {
        with_net!(self, net, T => {
            let flat = flat_params::<T>(&net.config(), params, "state_dict")?;
            net.set_params(&flat).map_err(to_py_err)
        })
    }

    /// (m, v, step): Adam's moments by parameter name and its step count.
    fn get_adam<'py>(&mut self, py: Python<'py>) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>, u64)> {
        with_net!(self, net, T => {
            let config = net.config();
            let adam = net.adam();
            let _: &[T] = &adam.m;
            Ok((params_dict(py, &config, &adam.m)?, params_dict(py, &config, &adam.v)?, adam.step))
        })
    }

    /// Replaces Adam's moments and step count; checked before anything changes.
    fn set_adam(&mut self, m: &Bound<'_, PyDict>, v: &Bound<'_, PyDict>, step: u64) -> PyResult<()> {
        with_net!(self, net, T => {
            let config = net.config();
            let m = flat_params::<T>(&config, m, "adam m")?;
            let v = flat_params::<T>(&config, v, "adam v")?;
            net.set_adam_state(&m, &v, step).map_err(to_py_err)
        })
    }

    /// The carried (h, c), each (B, H), as copies, or None.
    fn get_state<'py>(&mut self, py: Python<'py>) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        with_net!(self, net, T => {
            let hidden = net.config().hidden_size;
            match net.state() {
                None => Ok(None),
                Some((h, c)) => {
                    let (h, c): (&[T], &[T]) = (h, c);
                    let shape = [h.len() / hidden, hidden];
                    Ok(Some((new_array(py, h, &shape)?.into_any(), new_array(py, c, &shape)?.into_any())))
                }
            }
        })
    }

    /// Sets the carried state from (h, c), each (B, H), or clears it with None.
    fn set_state(&mut self, state: Option<(Bound<'_, PyAny>, Bound<'_, PyAny>)>) -> PyResult<()> {
        with_net!(self, net, T => {
            let hidden = net.config().hidden_size;
            match state {
                None => {
                    net.reset_state();
                    Ok(())
                }
                Some((h, c)) => {
                    let h = read_array::<T>(&h, "state h", 2)?;
                    let c = read_array::<T>(&c, "state c", 2)?;
                    if h.shape()[1] != hidden || h.shape()[0] == 0 {
                        return Err(PyValueError::new_err(format!(
                            "state h: expected shape (B, {hidden}), got {}",
                            shape_str(h.shape())
                        )));
                    }
                    check_shape("state c", c.shape(), h.shape())?;
                    net.set_state(Some((h.as_slice()?, c.as_slice()?))).map_err(to_py_err)
                }
            }
        })
    }

    /// The number of Adam updates done.
    #[getter]
    fn step(&mut self) -> u64 {
        with_net!(self, net, T => {
            let _: &[T] = net.params();
            net.adam().step
        })
    }
}
