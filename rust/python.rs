//! The Python binding, `sincos_rs._core`: the only file that knows Python.
//!
//! NumPy arrays in and out; every argument is checked (type, dtype, ndim,
//! shape, C-contiguity, finiteness) with an exception that names it; core
//! errors become `ValueError`; the GIL is released around every kernel.
//! The friendly classes (`LSTMRegressor`, `LSTM`, `Adam`) are Python
//! wrappers in `python/sincos_rs/` around what is here.

use numpy::{
    Element, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::adam::{adam_update as core_adam_update, AdamCoefficients, AdamConfig, EpsilonStyle};
use crate::error::Error;
use crate::lstm::{Lstm, LstmGrads, LstmParams};
use crate::model::{SeedConfig, SeedNetwork, PARAM_NAMES};
use crate::simd::Real;
use crate::threads;

fn to_py_err(e: Error) -> PyErr {
    match e {
        Error::Order(msg) => PyRuntimeError::new_err(msg),
        other => PyValueError::new_err(other.to_string()),
    }
}

fn shape_str(dims: &[usize]) -> String {
    crate::error::shape_str(dims)
}

/// Describes what `obj` is, for messages ("list", "numpy.ndarray of float64").
fn describe(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
}

/// Borrows `obj` as a read-only C-contiguous array of `T` with `ndim`
/// dimensions, or raises TypeError/ValueError naming `name`.
fn read_array<'py, T: Element + Real>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndim: usize,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    let array = obj
        .cast::<PyArrayDyn<T>>()
        .map_err(|_| match obj.cast::<numpy::PyUntypedArray>() {
            Ok(untyped) => PyTypeError::new_err(format!(
                "{name}: expected dtype {}, got {} (convert with {name}.astype(np.{}))",
                T::NAME,
                untyped.dtype(),
                T::NAME
            )),
            Err(_) => PyTypeError::new_err(format!(
                "{name}: expected a numpy.ndarray of {}, got {}",
                T::NAME,
                describe(obj)
            )),
        })?;
    if array.ndim() != ndim {
        return Err(PyValueError::new_err(format!(
            "{name}: expected a {ndim}-d array, got {}-d with shape {}",
            array.ndim(),
            shape_str(array.shape())
        )));
    }
    if !array.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name}: expected a C-contiguous array (use np.ascontiguousarray({name}))"
        )));
    }
    array
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("{name}: cannot be read: {e}")))
}

/// Borrows `obj` as a writable C-contiguous array of `T`.
fn write_array<'py, T: Element + Real>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    let array = obj.cast::<PyArrayDyn<T>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name}: expected a writable numpy.ndarray of {}, got {}",
            T::NAME,
            describe(obj)
        ))
    })?;
    if !array.is_c_contiguous() {
        return Err(PyValueError::new_err(format!("{name}: expected a C-contiguous array")));
    }
    array.try_readwrite().map_err(|e| {
        PyValueError::new_err(format!(
            "{name}: must be a writable array that is not borrowed elsewhere ({e})"
        ))
    })
}

/// The core's vectorised finiteness scan, for an argument named at run time
/// (`params['w']`): ValueError with the first bad flat index.
fn check_finite_named<T: Real>(label: &str, data: &[T]) -> PyResult<()> {
    match crate::error::check_finite("", data) {
        Err(Error::NonFinite { index, .. }) => Err(PyValueError::new_err(format!(
            "{label}: all values must be finite, found NaN or inf at flat index {index}"
        ))),
        _ => Ok(()),
    }
}

/// The shape check every caller needs: `name` must be exactly `expected`.
fn check_shape(name: &str, got: &[usize], expected: &[usize]) -> PyResult<()> {
    if got == expected {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "{name}: expected shape {}, got {}",
            shape_str(expected),
            shape_str(got)
        )))
    }
}

fn new_array<'py, T: Element>(py: Python<'py>, data: &[T], shape: &[usize]) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    PyArray1::from_slice(py, data).reshape(shape)
}

/// A new zero-filled array of `shape` and `write`'s result on its elements
/// (run without the GIL): kernels write their outputs straight into it.
fn new_array_with<'py, T: Element + Real>(
    py: Python<'py>,
    shape: &[usize],
    write: impl FnOnce(&mut [T]) -> crate::error::Result<()> + Send,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let array = PyArrayDyn::<T>::zeros(py, shape, false);
    {
        let mut view = array
            .try_readwrite()
            .map_err(|e| PyRuntimeError::new_err(format!("new array not writable: {e}")))?;
        let data = view.as_slice_mut()?;
        py.detach(|| write(data)).map_err(to_py_err)?;
    }
    Ok(array)
}

/// A dtype given as "float32"/"float64".
#[derive(Clone, Copy, PartialEq, Eq)]
enum DType {
    F32,
    F64,
}

fn parse_dtype(s: &str) -> PyResult<DType> {
    match s {
        "float32" => Ok(DType::F32),
        "float64" => Ok(DType::F64),
        other => Err(PyValueError::new_err(format!(
            "dtype: expected 'float32' or 'float64', got {other:?}"
        ))),
    }
}

fn parse_style(s: &str) -> PyResult<EpsilonStyle> {
    match s {
        "tensorflow" => Ok(EpsilonStyle::TensorFlow),
        "pytorch" => Ok(EpsilonStyle::PyTorch),
        other => Err(PyValueError::new_err(format!(
            "eps_style: expected 'tensorflow' or 'pytorch', got {other:?}"
        ))),
    }
}

// ---------------------------------------------------------------- the seed network

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
struct SeedNetworkCore {
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
    if let Some(extra) = params.keys().iter().find_map(|k| {
        let k: String = k.extract().ok()?;
        (!PARAM_NAMES.contains(&k.as_str())).then_some(k)
    }) {
        return Err(pyo3::exceptions::PyKeyError::new_err(format!(
            "{what}: unexpected key {extra:?} (expected {})",
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

// ---------------------------------------------------------------- the LSTM layer

enum LayerWs {
    F32(Lstm<f32>),
    F64(Lstm<f64>),
}

/// An LSTM layer's workspace: forward saves activations here for backward.
/// Use `sincos_rs.LSTM`, which wraps this and owns the weights.
#[pyclass(module = "sincos_rs._core")]
struct LstmCore {
    ws: LayerWs,
}

macro_rules! with_ws {
    ($self:expr, $ws:ident, $t:ident => $body:expr) => {
        match &mut $self.ws {
            LayerWs::F32($ws) => {
                type $t = f32;
                $body
            }
            LayerWs::F64($ws) => {
                type $t = f64;
                $body
            }
        }
    };
}

/// Reads the three weight arrays of an LSTM with the given sizes.
fn read_weights<'py, T: Element + Real>(
    w_ih: &Bound<'py, PyAny>,
    w_hh: &Bound<'py, PyAny>,
    bias: &Bound<'py, PyAny>,
    input: usize,
    hidden: usize,
) -> PyResult<[PyReadonlyArrayDyn<'py, T>; 3]> {
    let w_ih = read_array::<T>(w_ih, "weight_ih", 2)?;
    check_shape("weight_ih", w_ih.shape(), &[4 * hidden, input])?;
    let w_hh = read_array::<T>(w_hh, "weight_hh", 2)?;
    check_shape("weight_hh", w_hh.shape(), &[4 * hidden, hidden])?;
    let bias = read_array::<T>(bias, "bias", 1)?;
    check_shape("bias", bias.shape(), &[4 * hidden])?;
    Ok([w_ih, w_hh, bias])
}

type StatePair<'py> = Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>;

/// Reads an optional (h, c) pair, each (batch, hidden).
fn read_pair<'py, T: Element + Real>(
    pair: &StatePair<'py>,
    names: (&str, &str),
    batch: usize,
    hidden: usize,
) -> PyResult<Option<[PyReadonlyArrayDyn<'py, T>; 2]>> {
    match pair {
        None => Ok(None),
        Some((h, c)) => {
            let h = read_array::<T>(h, names.0, 2)?;
            check_shape(names.0, h.shape(), &[batch, hidden])?;
            let c = read_array::<T>(c, names.1, 2)?;
            check_shape(names.1, c.shape(), &[batch, hidden])?;
            Ok(Some([h, c]))
        }
    }
}

#[pymethods]
impl LstmCore {
    #[new]
    fn new(input_size: usize, hidden_size: usize, dtype: &str) -> PyResult<Self> {
        let ws = match parse_dtype(dtype)? {
            DType::F32 => LayerWs::F32(Lstm::new(input_size, hidden_size).map_err(to_py_err)?),
            DType::F64 => LayerWs::F64(Lstm::new(input_size, hidden_size).map_err(to_py_err)?),
        };
        Ok(LstmCore { ws })
    }

    /// forward(x (B,T,I), weight_ih, weight_hh, bias, state=None) -> (out (B,T,H), h_n, c_n)
    #[pyo3(signature = (x, weight_ih, weight_hh, bias, state=None))]
    fn forward<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        weight_ih: &Bound<'py, PyAny>,
        weight_hh: &Bound<'py, PyAny>,
        bias: &Bound<'py, PyAny>,
        state: StatePair<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        with_ws!(self, ws, T => {
            let (input, hidden) = (ws.input_size(), ws.hidden_size());
            let xa = read_array::<T>(x, "x", 3)?;
            let shape = xa.shape().to_vec();
            if shape[2] != input || shape[0] == 0 || shape[1] == 0 {
                return Err(PyValueError::new_err(format!(
                    "x: expected shape (B, T, {input}) with B, T >= 1, got {}",
                    shape_str(&shape)
                )));
            }
            let (batch, steps) = (shape[0], shape[1]);
            let [w_ih, w_hh, b] = read_weights::<T>(weight_ih, weight_hh, bias, input, hidden)?;
            let st = read_pair::<T>(&state, ("h0", "c0"), batch, hidden)?;
            let p = LstmParams { weight_ih: w_ih.as_slice()?, weight_hh: w_hh.as_slice()?, bias: b.as_slice()? };
            let xs = xa.as_slice()?;
            let init = match &st {
                Some([h, c]) => Some((h.as_slice()?, c.as_slice()?)),
                None => None,
            };
            let out = new_array_with::<T>(py, &[batch, steps, hidden], |out| {
                ws.forward_into(p, xs, batch, steps, init, out)
            })?;
            let (h_n, c_n) = ws.final_state();
            Ok((out.into_any(), new_array(py, h_n, &[batch, hidden])?.into_any(), new_array(py, c_n, &[batch, hidden])?.into_any()))
        })
    }

    /// backward(d_out, weight_ih, weight_hh, bias, grad_weight_ih, grad_weight_hh,
    /// grad_bias, d_state=None) -> (dx, dh0, dc0); gradients written in place.
    #[pyo3(signature = (d_out, weight_ih, weight_hh, bias, grad_weight_ih, grad_weight_hh, grad_bias, d_state=None))]
    #[allow(clippy::too_many_arguments)]
    fn backward<'py>(
        &mut self,
        py: Python<'py>,
        d_out: &Bound<'py, PyAny>,
        weight_ih: &Bound<'py, PyAny>,
        weight_hh: &Bound<'py, PyAny>,
        bias: &Bound<'py, PyAny>,
        grad_weight_ih: &Bound<'py, PyAny>,
        grad_weight_hh: &Bound<'py, PyAny>,
        grad_bias: &Bound<'py, PyAny>,
        d_state: StatePair<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        with_ws!(self, ws, T => {
            let s = ws.shape().ok_or_else(|| PyRuntimeError::new_err("backward called before forward"))?;
            let d = read_array::<T>(d_out, "d_out", 3)?;
            check_shape("d_out", d.shape(), &[s.batch, s.steps, s.hidden])?;
            let [w_ih, w_hh, b] = read_weights::<T>(weight_ih, weight_hh, bias, s.input, s.hidden)?;
            let ds = read_pair::<T>(&d_state, ("dh_n", "dc_n"), s.batch, s.hidden)?;
            let mut g_ih = write_array::<T>(grad_weight_ih, "grad_weight_ih")?;
            check_shape("grad_weight_ih", g_ih.shape(), &[4 * s.hidden, s.input])?;
            let mut g_hh = write_array::<T>(grad_weight_hh, "grad_weight_hh")?;
            check_shape("grad_weight_hh", g_hh.shape(), &[4 * s.hidden, s.hidden])?;
            let mut g_b = write_array::<T>(grad_bias, "grad_bias")?;
            check_shape("grad_bias", g_b.shape(), &[4 * s.hidden])?;
            let p = LstmParams { weight_ih: w_ih.as_slice()?, weight_hh: w_hh.as_slice()?, bias: b.as_slice()? };
            let d_slice = d.as_slice()?;
            let d_final = match &ds {
                Some([h, c]) => Some((h.as_slice()?, c.as_slice()?)),
                None => None,
            };
            let grads = LstmGrads { weight_ih: g_ih.as_slice_mut()?, weight_hh: g_hh.as_slice_mut()?, bias: g_b.as_slice_mut()? };
            let dx = new_array_with::<T>(py, &[s.batch, s.steps, s.input], |dx| {
                ws.backward(p, d_slice, d_final, Some(dx), grads)
            })?;
            let (dh0, dc0) = ws.initial_state_grad();
            Ok((
                dx.into_any(),
                new_array(py, dh0, &[s.batch, s.hidden])?.into_any(),
                new_array(py, dc0, &[s.batch, s.hidden])?.into_any(),
            ))
        })
    }
}

// ---------------------------------------------------------------- Adam and threads

/// One array's Adam update, checked and borrowed: param, grad, m, v.
struct AdamEntry<'py, T: Element> {
    param: PyReadwriteArrayDyn<'py, T>,
    grad: PyReadonlyArrayDyn<'py, T>,
    m: PyReadwriteArrayDyn<'py, T>,
    v: PyReadwriteArrayDyn<'py, T>,
}

/// Checks and borrows entry `name` (its param of dtype T): every way the
/// gradient can be wrong is a ValueError naming `grads['name']`.
fn adam_entry<'py, T: Element + Real>(
    name: &str,
    param: &Bound<'py, PyAny>,
    grad: &Bound<'py, PyAny>,
    m: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
) -> PyResult<AdamEntry<'py, T>> {
    let param = write_array::<T>(param, &format!("params['{name}']"))?;
    let shape = param.shape().to_vec();
    let bad = |got: String| {
        PyValueError::new_err(format!(
            "grads['{name}']: expected a C-contiguous {} array of shape {}, got {got}",
            T::NAME,
            shape_str(&shape)
        ))
    };
    let grad = match grad.cast::<PyArrayDyn<T>>() {
        Ok(g) if g.shape() == shape.as_slice() && g.is_c_contiguous() => g.readonly(),
        Ok(g) => {
            return Err(bad(format!(
                "shape {} (C-contiguous: {})",
                shape_str(g.shape()),
                g.is_c_contiguous()
            )))
        }
        Err(_) => match grad.cast::<numpy::PyUntypedArray>() {
            Ok(u) => return Err(bad(format!("{} of shape {}", u.dtype(), shape_str(u.shape())))),
            Err(_) => return Err(bad(describe(grad))),
        },
    };
    check_finite_named(&format!("grads['{name}']"), grad.as_slice()?)?;
    let m = write_array::<T>(m, &format!("m['{name}']"))?;
    check_shape("m", m.shape(), &shape)?;
    let v = write_array::<T>(v, &format!("v['{name}']"))?;
    check_shape("v", v.shape(), &shape)?;
    Ok(AdamEntry { param, grad, m, v })
}

/// One fused Adam update of every array `params[i]` in place (with its
/// moments `ms[i]`, `vs[i]`) by `grads[i]`, in one call. Every array is
/// checked before any is changed, so a bad one leaves all unchanged; the
/// updates then run without the GIL. Parameters may mix float32 and float64.
#[pyfunction]
#[pyo3(signature = (names, params, grads, ms, vs, step, *, lr, beta1, beta2, eps, eps_style))]
#[allow(clippy::too_many_arguments)]
fn adam_step(
    py: Python<'_>,
    names: Vec<String>,
    params: Vec<Bound<'_, PyAny>>,
    grads: Vec<Bound<'_, PyAny>>,
    ms: Vec<Bound<'_, PyAny>>,
    vs: Vec<Bound<'_, PyAny>>,
    step: u64,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    eps_style: &str,
) -> PyResult<()> {
    let config = AdamConfig {
        lr,
        beta1,
        beta2,
        eps,
        style: parse_style(eps_style)?,
    };
    config.validate().map_err(to_py_err)?;
    if step == 0 {
        return Err(PyValueError::new_err("step: expected an update number >= 1, got 0"));
    }
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
    let (mut f32s, mut f64s) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (name, p) = (&names[i], &params[i]);
        if p.cast::<PyArrayDyn<f64>>().is_ok() {
            f64s.push(adam_entry::<f64>(name, p, &grads[i], &ms[i], &vs[i])?);
        } else {
            f32s.push(adam_entry::<f32>(name, p, &grads[i], &ms[i], &vs[i])?);
        }
    }
    fn slices<'a, T: Element + Real>(entries: &'a mut [AdamEntry<'_, T>]) -> PyResult<Vec<AdamSlices<'a, T>>> {
        entries
            .iter_mut()
            .map(|e| {
                Ok((
                    e.param.as_slice_mut()?,
                    e.grad.as_slice()?,
                    e.m.as_slice_mut()?,
                    e.v.as_slice_mut()?,
                ))
            })
            .collect()
    }
    let (s32, s64) = (slices(&mut f32s)?, slices(&mut f64s)?);
    let (k32, k64) = (
        AdamCoefficients::<f32>::new(&config, step),
        AdamCoefficients::<f64>::new(&config, step),
    );
    py.detach(|| {
        for (p, g, m, v) in s32 {
            core_adam_update(p, g, m, v, &k32)?;
        }
        for (p, g, m, v) in s64 {
            core_adam_update(p, g, m, v, &k64)?;
        }
        Ok(())
    })
    .map_err(to_py_err)
}

/// param, grad, m, v of one Adam entry.
type AdamSlices<'a, T> = (&'a mut [T], &'a [T], &'a mut [T], &'a mut [T]);

/// Sets the number of threads the kernels use (0: the default).
#[pyfunction]
fn set_num_threads(n: usize) {
    threads::set_num_threads(n);
}

/// The number of threads the kernels use.
#[pyfunction]
fn get_num_threads() -> usize {
    threads::num_threads()
}

/// The instruction set the kernels run with ("avx512", "avx2" or "baseline").
#[pyfunction]
fn simd_level() -> &'static str {
    crate::simd_level()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SeedNetworkCore>()?;
    m.add_class::<LstmCore>()?;
    m.add_function(wrap_pyfunction!(adam_step, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add("PARAM_NAMES", PARAM_NAMES.to_vec())?;
    m.add("NUM_THREADS_ENV_VAR", threads::ENV_VAR)?;
    m.add("SIMD_ENV_VAR", crate::SIMD_ENV_VAR)?;
    Ok(())
}
