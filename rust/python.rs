//! The Python binding, `sincos_rs._core`: the only file that knows Python.
//!
//! NumPy arrays in and out; every argument is checked (type, dtype, ndim,
//! shape, C-contiguity, alignment, finiteness) with an exception that names
//! it; core errors become `ValueError` (bad input), `FloatingPointError` (a
//! step that would not be finite), `MemoryError` or `RuntimeError` (calls
//! out of order); the GIL is released around every kernel.
//!
//! Nothing here may panic on any input: a panic would reach Python as
//! `PanicException`, which `except Exception` does not catch. So no
//! `unwrap`/`expect`, arrays are borrowed with `try_readonly` /
//! `try_readwrite`, new arrays are made with a fallible allocation
//! ([`zeros`]), and an array a call writes must not share memory with any
//! other array of the call ([`check_no_aliasing`]).
//! The friendly classes (`LSTMRegressor`, `LSTM`, `Adam`) are Python
//! wrappers in `python/sincos_rs/` around what is here.

use numpy::npyffi::{npy_intp, PY_ARRAY_API};
use numpy::BorrowError;
use numpy::{
    Element, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFloatingPointError, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::adam::{adam_update as core_adam_update, adam_update_check, AdamCoefficients, AdamConfig, EpsilonStyle};
use crate::error::Error;
use crate::lstm::{functional, Kernel, LstmGrads, LstmParams, LstmShape, Sequences};
use crate::model::{SeedConfig, SeedNetwork, PARAM_NAMES};
use crate::simd::Real;
use crate::threads;

mod chain;

fn to_py_err(e: Error) -> PyErr {
    match e {
        Error::Order(msg) => PyRuntimeError::new_err(msg),
        Error::Diverged(msg) => PyFloatingPointError::new_err(msg),
        Error::TooLarge(msg) => PyMemoryError::new_err(msg),
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

/// `obj` as an array of `T` with `ndim` dimensions (any if None),
/// C-contiguous and aligned, not yet borrowed; TypeError/ValueError naming
/// `name` otherwise.
fn array_arg<'py, T: Element + Real>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndim: Option<usize>,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let array = obj
        .cast::<PyArrayDyn<T>>()
        .map_err(|_| match obj.cast::<PyUntypedArray>() {
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
    if let Some(ndim) = ndim {
        if array.ndim() != ndim {
            return Err(PyValueError::new_err(format!(
                "{name}: expected a {ndim}-d array, got {}-d with shape {}",
                array.ndim(),
                shape_str(array.shape())
            )));
        }
    }
    if !array.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name}: expected a C-contiguous array (use np.ascontiguousarray({name}))"
        )));
    }
    if !array.is_aligned() {
        return Err(PyValueError::new_err(format!(
            "{name}: expected an aligned array (its data starts at an address that is not a \
             multiple of the item size; use {name}.copy())"
        )));
    }
    Ok(array.clone())
}

/// Borrows a checked array for reading.
fn borrow_read<'py, T: Element>(array: &Bound<'py, PyArrayDyn<T>>, name: &str) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    array.try_readonly().map_err(|_| {
        PyValueError::new_err(format!(
            "{name}: is being written by another call (from another thread?) and cannot be read now"
        ))
    })
}

/// Borrows a checked array for writing.
fn borrow_write<'py, T: Element>(
    array: &Bound<'py, PyArrayDyn<T>>,
    name: &str,
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    array.try_readwrite().map_err(|e| match e {
        BorrowError::NotWriteable => {
            PyValueError::new_err(format!("{name}: expected a writable array, got a read-only one"))
        }
        _ => PyValueError::new_err(format!(
            "{name}: is being used by another call (from another thread?) and cannot be written now"
        )),
    })
}

/// Borrows `obj` as a read-only C-contiguous array of `T` with `ndim`
/// dimensions, or raises TypeError/ValueError naming `name`.
fn read_array<'py, T: Element + Real>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndim: usize,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    borrow_read(&array_arg::<T>(obj, name, Some(ndim))?, name)
}

/// The bytes an array's elements occupy, `[start, end)` (exact for the
/// C-contiguous arrays [`array_arg`] lets through).
fn byte_range(array: &Bound<'_, PyUntypedArray>) -> (usize, usize) {
    // SAFETY: reading the data pointer of a live array object.
    let start = unsafe { (*array.as_array_ptr()).fields.data } as usize;
    (start, start + array.len() * array.dtype().itemsize())
}

/// One array argument of a call, for [`check_no_aliasing`].
struct ArrayUse<'a, 'py> {
    name: String,
    array: &'a Bound<'py, PyUntypedArray>,
    written: bool,
}

/// Raises ValueError naming both arguments if an array the call writes
/// shares memory with any other array argument. NumPy's borrow flags only
/// link arrays with one base object; this compares the memory itself, so
/// two arrays made by `np.frombuffer` on one buffer are caught too. Arrays
/// only read may overlap.
fn check_no_aliasing(uses: &[ArrayUse<'_, '_>]) -> PyResult<()> {
    let mut spans: Vec<((usize, usize), &ArrayUse<'_, '_>)> = uses
        .iter()
        .map(|u| (byte_range(u.array), u))
        .filter(|((start, end), _)| start < end)
        .collect();
    spans.sort_by_key(|(range, _)| *range);
    // Sweep in order of start: an overlap shows as a start below the
    // furthest end seen so far (of a written array, or of any array for a
    // written one).
    let (mut furthest, mut furthest_written) = (None::<(usize, &ArrayUse)>, None::<(usize, &ArrayUse)>);
    for ((start, end), u) in spans {
        let earlier = match (furthest_written, furthest) {
            (Some((e, w)), _) if start < e => Some(w),
            (_, Some((e, a))) if u.written && start < e => Some(a),
            _ => None,
        };
        if let Some(other) = earlier {
            let writer = if other.written { &other.name } else { &u.name };
            return Err(PyValueError::new_err(format!(
                "{} and {} share memory, and this call writes {writer}: pass separate arrays \
                 (e.g. a copy)",
                other.name, u.name
            )));
        }
        if furthest.is_none_or(|(e, _)| end > e) {
            furthest = Some((end, u));
        }
        if u.written && furthest_written.is_none_or(|(e, _)| end > e) {
            furthest_written = Some((end, u));
        }
    }
    Ok(())
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

/// A new C-contiguous zero-filled array; MemoryError (not a panic, as
/// rust-numpy's own constructors would) when NumPy cannot allocate it.
fn zeros<'py, T: Element>(py: Python<'py>, shape: &[usize]) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let mut dims = shape
        .iter()
        .map(|&d| npy_intp::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PyMemoryError::new_err(format!("an array of shape {} is too large", shape_str(shape))))?;
    let ndim = std::ffi::c_int::try_from(dims.len()).map_err(|_| PyValueError::new_err("too many dimensions"))?;
    // SAFETY: PyArray_Zeros reads `ndim` dims and steals the dtype
    // reference; it returns a new reference to an array of dtype T, or NULL
    // with a Python error set (which from_owned_ptr_or_err raises).
    unsafe {
        let ptr = PY_ARRAY_API.PyArray_Zeros(py, ndim, dims.as_mut_ptr(), T::get_dtype(py).into_dtype_ptr(), 0);
        Bound::from_owned_ptr_or_err(py, ptr).map(|a| a.cast_into_unchecked())
    }
}

/// A new array of `shape` holding a copy of `data` (as many elements).
fn new_array<'py, T: Element + Real>(
    py: Python<'py>,
    data: &[T],
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let array = zeros::<T>(py, shape)?;
    borrow_write(&array, "new array")?.as_slice_mut()?.copy_from_slice(data);
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

// ---------------------------------------------------------------- the functional LSTM

/// An argument's memory, for the aliasing checks: [start, end) in bytes.
struct Span {
    name: &'static str,
    start: usize,
    end: usize,
}

impl Span {
    fn of<T>(name: &'static str, data: &[T]) -> Span {
        let start = data.as_ptr() as usize;
        Span {
            name,
            start,
            end: start + std::mem::size_of_val(data),
        }
    }

    fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Every output must share no memory with any input or other output.
fn check_no_alias(outputs: &[Span], inputs: &[Span]) -> PyResult<()> {
    for (k, out) in outputs.iter().enumerate() {
        let others = outputs[k + 1..].iter().chain(inputs);
        if let Some(other) = others.into_iter().find(|o| out.overlaps(o)) {
            return Err(PyValueError::new_err(format!(
                "{}: shares memory with {}; outputs must not overlap any other argument",
                out.name, other.name
            )));
        }
    }
    Ok(())
}

/// [`check_no_aliasing`] on a call's array arguments before any is
/// borrowed (a borrow that fails first could not name the other array);
/// `(name, argument, written)`, arguments that are not arrays left to the
/// type checks that follow.
fn check_args_alias(args: &[(&str, Option<&Bound<'_, PyAny>>, bool)]) -> PyResult<()> {
    let arrays: Vec<(String, Bound<'_, PyUntypedArray>, bool)> = args
        .iter()
        .filter_map(|&(name, obj, written)| {
            Some((name.to_owned(), obj?.cast::<PyUntypedArray>().ok()?.clone(), written))
        })
        .collect();
    let uses: Vec<ArrayUse> = arrays
        .iter()
        .map(|(name, array, written)| ArrayUse {
            name: name.clone(),
            array,
            written: *written,
        })
        .collect();
    check_no_aliasing(&uses)
}

/// The float type of `obj`, if it is a float32 or float64 array.
fn float_dtype(obj: &Bound<'_, PyAny>) -> Option<DType> {
    if obj.cast::<PyArrayDyn<f32>>().is_ok() {
        Some(DType::F32)
    } else if obj.cast::<PyArrayDyn<f64>>().is_ok() {
        Some(DType::F64)
    } else {
        None
    }
}

/// Which float type a functional call runs in: that of the weights when
/// they agree (so an input `x` of another dtype is the argument named),
/// else that of `x` (so the weight that differs is named).
fn call_dtype(
    (x_name, x): (&str, &Bound<'_, PyAny>),
    weight_ih: &Bound<'_, PyAny>,
    weight_hh: &Bound<'_, PyAny>,
) -> PyResult<DType> {
    let (wi, wh) = (float_dtype(weight_ih), float_dtype(weight_hh));
    if let (Some(a), Some(b)) = (wi, wh) {
        if a == b {
            return Ok(a);
        }
    }
    float_dtype(x).or(wh).or(wi).ok_or_else(|| {
        let got = match x.cast::<numpy::PyUntypedArray>() {
            Ok(a) => format!("dtype {}", a.dtype()),
            Err(_) => describe(x),
        };
        PyTypeError::new_err(format!(
            "{x_name}: expected a numpy.ndarray of float32 or float64, got {got}"
        ))
    })
}

/// The shape of an array argument, or TypeError naming it.
/// (No allocation unless it fails: `lstm_step` at B1 H10 runs it three
/// times in a few hundred nanoseconds.)
fn untyped_shape<'a>(obj: &'a Bound<'_, PyAny>, name: &str, expected: &str) -> PyResult<&'a [usize]> {
    match obj.cast::<numpy::PyUntypedArray>() {
        Ok(a) => Ok(a.shape()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{name}: expected a numpy.ndarray {expected}, got {}",
            describe(obj)
        ))),
    }
}

/// (H, I) from weight_hh (4H, H) and weight_ih (4H, I): the weights give
/// the sizes, so an input of another width is the argument named.
fn weight_sizes(weight_ih: &Bound<'_, PyAny>, weight_hh: &Bound<'_, PyAny>) -> PyResult<(usize, usize)> {
    let ws = untyped_shape(weight_hh, "weight_hh", "(4H, H)")?;
    if ws.len() != 2 || ws[1] == 0 || ws[0] != 4 * ws[1] {
        return Err(PyValueError::new_err(format!(
            "weight_hh: expected shape (4H, H) with H >= 1, got {}",
            shape_str(ws)
        )));
    }
    let hidden = ws[1];
    let wi = untyped_shape(weight_ih, "weight_ih", "(4H, I)")?;
    if wi.len() != 2 || wi[0] != 4 * hidden || wi[1] == 0 {
        return Err(PyValueError::new_err(format!(
            "weight_ih: expected shape ({}, I) with I >= 1 (4H, for weight_hh's H = {hidden}), got {}",
            4 * hidden,
            shape_str(wi)
        )));
    }
    Ok((hidden, wi[1]))
}

/// Reads `name` as a C-contiguous, aligned array of `T` of exactly `shape`.
fn read_exact<'py, T: Element + Real>(
    obj: &Bound<'py, PyAny>,
    name: &'static str,
    shape: &[usize],
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    let a = read_array::<T>(obj, name, shape.len())?;
    check_shape(name, a.shape(), shape)?;
    check_aligned(name, a.is_aligned())?;
    Ok(a)
}

/// Borrows `name` as a writable, C-contiguous, aligned array of `T` of exactly `shape`.
fn write_exact<'py, T: Element + Real>(
    obj: &Bound<'py, PyAny>,
    name: &'static str,
    shape: &[usize],
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    let a = write_typed::<T>(obj, name)?;
    check_shape(name, a.shape(), shape)?;
    check_aligned(name, a.is_aligned())?;
    Ok(a)
}

/// Borrows `obj` as a writable array of `T`, with a wrong dtype named as such.
fn write_typed<'py, T: Element + Real>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    if let Ok(untyped) = obj.cast::<numpy::PyUntypedArray>() {
        if obj.cast::<PyArrayDyn<T>>().is_err() {
            return Err(PyTypeError::new_err(format!(
                "{name}: expected dtype {}, got {}",
                T::NAME,
                untyped.dtype()
            )));
        }
    }
    borrow_write(&array_arg::<T>(obj, name, None)?, name)
}

fn check_aligned(name: &str, aligned: bool) -> PyResult<()> {
    if aligned {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "{name}: expected an aligned array (copy it with np.array({name}))"
        )))
    }
}

/// An optional array argument: None, or read as [`read_exact`].
fn read_optional<'py, T: Element + Real>(
    obj: &Option<Bound<'py, PyAny>>,
    name: &'static str,
    shape: &[usize],
) -> PyResult<Option<PyReadonlyArrayDyn<'py, T>>> {
    obj.as_ref().map(|o| read_exact::<T>(o, name, shape)).transpose()
}

/// The sizes (B, T, I, H) from x (B, T, ·), weight_ih (4H, I) and
/// weight_hh (4H, H); x's width is checked against I when it is read.
fn functional_shape(
    x: &Bound<'_, PyAny>,
    weight_ih: &Bound<'_, PyAny>,
    weight_hh: &Bound<'_, PyAny>,
) -> PyResult<LstmShape> {
    let xs = untyped_shape(x, "x", "of float32 or float64")?;
    if xs.len() != 3 || xs.contains(&0) {
        return Err(PyValueError::new_err(format!(
            "x: expected shape (B, T, I) with B, T, I >= 1, got {}",
            shape_str(xs)
        )));
    }
    let (hidden, input) = weight_sizes(weight_ih, weight_hh)?;
    Ok(LstmShape {
        batch: xs[0],
        steps: xs[1],
        input,
        hidden,
    })
}

/// Reads `lengths`: None, or a 1-D int64 array of B values in 1..=T.
fn read_lengths(lengths: &Option<Bound<'_, PyAny>>, s: LstmShape) -> PyResult<Option<Vec<usize>>> {
    let Some(obj) = lengths else { return Ok(None) };
    let array = obj.cast::<PyArrayDyn<i64>>().map_err(|_| {
        let got = match obj.cast::<numpy::PyUntypedArray>() {
            Ok(a) => format!("dtype {}", a.dtype()),
            Err(_) => describe(obj),
        };
        PyTypeError::new_err(format!(
            "lengths: expected a numpy.ndarray of int64 (one length per batch row), got {got}"
        ))
    })?;
    let values = array
        .to_vec()
        .map_err(|_| PyValueError::new_err("lengths: expected a 1-d array"))?;
    if array.ndim() != 1 || values.len() != s.batch {
        return Err(PyValueError::new_err(format!(
            "lengths: expected shape ({},), one length per batch row, got {}",
            s.batch,
            shape_str(array.shape())
        )));
    }
    if let Some((b, n)) = values
        .iter()
        .enumerate()
        .find(|(_, &n)| n < 1 || n as u64 > s.steps as u64)
    {
        return Err(PyValueError::new_err(format!(
            "lengths: expected values in 1..={} (the time steps of x), got {n} at index {b}",
            s.steps
        )));
    }
    Ok(Some(values.into_iter().map(|n| n as usize).collect()))
}

/// The slices of an optional pair of arrays, a missing one as `zeros`.
fn pair_or_zeros<'a, T: Element + Real>(
    a: &'a Option<PyReadonlyArrayDyn<'_, T>>,
    b: &'a Option<PyReadonlyArrayDyn<'_, T>>,
    zeros: &'a [T],
) -> PyResult<Option<(&'a [T], &'a [T])>> {
    Ok(match (a, b) {
        (None, None) => None,
        _ => Some((
            a.as_ref().map(|a| a.as_slice()).transpose()?.unwrap_or(zeros),
            b.as_ref().map(|b| b.as_slice()).transpose()?.unwrap_or(zeros),
        )),
    })
}

/// Elements of `dtype` the saved activations of a forward pass take.
#[pyfunction]
fn lstm_saved_size(batch: usize, steps: usize, input_size: usize, hidden_size: usize, dtype: &str) -> PyResult<usize> {
    let s = LstmShape {
        batch,
        steps,
        input: input_size,
        hidden: hidden_size,
    };
    match parse_dtype(dtype)? {
        DType::F32 => functional::check_sizes::<f32>(s).map(|()| functional::saved_len::<f32>(s)),
        DType::F64 => functional::check_sizes::<f64>(s).map(|()| functional::saved_len::<f64>(s)),
    }
    .map_err(to_py_err)
}

/// Stateless forward: writes out, h_n, c_n and (unless None) saved.
#[pyfunction]
#[pyo3(signature = (x, weight_ih, weight_hh, bias, h0, c0, out, h_n, c_n, saved, *, lengths=None, reverse=false))]
#[allow(clippy::too_many_arguments)]
fn lstm_forward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weight_ih: &Bound<'_, PyAny>,
    weight_hh: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    h0: Option<Bound<'_, PyAny>>,
    c0: Option<Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
    h_n: &Bound<'_, PyAny>,
    c_n: &Bound<'_, PyAny>,
    saved: Option<Bound<'_, PyAny>>,
    lengths: Option<Bound<'_, PyAny>>,
    reverse: bool,
) -> PyResult<()> {
    let args = ForwardArgs {
        x,
        weight_ih,
        weight_hh,
        bias,
        h0,
        c0,
        out,
        h_n,
        c_n,
        saved,
    };
    let lengths = read_lengths(&lengths, functional_shape(x, weight_ih, weight_hh)?)?;
    let seq = Sequences {
        lengths: lengths.as_deref(),
        reverse,
    };
    match call_dtype(("x", x), weight_ih, weight_hh)? {
        DType::F32 => functional_forward::<f32>(py, args, seq),
        DType::F64 => functional_forward::<f64>(py, args, seq),
    }
}

struct ForwardArgs<'a, 'py> {
    x: &'a Bound<'py, PyAny>,
    weight_ih: &'a Bound<'py, PyAny>,
    weight_hh: &'a Bound<'py, PyAny>,
    bias: &'a Bound<'py, PyAny>,
    h0: Option<Bound<'py, PyAny>>,
    c0: Option<Bound<'py, PyAny>>,
    out: &'a Bound<'py, PyAny>,
    h_n: &'a Bound<'py, PyAny>,
    c_n: &'a Bound<'py, PyAny>,
    saved: Option<Bound<'py, PyAny>>,
}

fn functional_forward<T: Element + functional::Pooled>(
    py: Python<'_>,
    a: ForwardArgs<'_, '_>,
    seq: Sequences<'_>,
) -> PyResult<()> {
    let s = functional_shape(a.x, a.weight_ih, a.weight_hh)?;
    let (b, t, i, h) = (s.batch, s.steps, s.input, s.hidden);
    check_args_alias(&[
        ("x", Some(a.x), false),
        ("weight_ih", Some(a.weight_ih), false),
        ("weight_hh", Some(a.weight_hh), false),
        ("bias", Some(a.bias), false),
        ("h0", a.h0.as_ref(), false),
        ("c0", a.c0.as_ref(), false),
        ("out", Some(a.out), true),
        ("h_n", Some(a.h_n), true),
        ("c_n", Some(a.c_n), true),
        ("saved", a.saved.as_ref(), true),
    ])?;
    let x = read_exact::<T>(a.x, "x", &[b, t, i])?;
    let w_ih = read_exact::<T>(a.weight_ih, "weight_ih", &[4 * h, i])?;
    let w_hh = read_exact::<T>(a.weight_hh, "weight_hh", &[4 * h, h])?;
    let bias = read_exact::<T>(a.bias, "bias", &[4 * h])?;
    let h0 = read_optional::<T>(&a.h0, "h0", &[b, h])?;
    let c0 = read_optional::<T>(&a.c0, "c0", &[b, h])?;
    let mut out = write_exact::<T>(a.out, "out", &[b, t, h])?;
    let mut h_n = write_exact::<T>(a.h_n, "h_n", &[b, h])?;
    let mut c_n = write_exact::<T>(a.c_n, "c_n", &[b, h])?;
    let mut saved = match &a.saved {
        None => None,
        Some(o) => {
            let n = functional::saved_len::<T>(s);
            let arr = write_typed::<T>(o, "saved")?;
            if arr.ndim() != 1 || arr.len() != n {
                return Err(PyValueError::new_err(format!(
                    "saved: expected a 1-d array of lstm_saved_size({b}, {t}, {i}, {h}, {:?}) = {n} elements, got shape {}",
                    T::NAME,
                    shape_str(arr.shape())
                )));
            }
            check_aligned("saved", arr.is_aligned())?;
            Some(arr)
        }
    };
    let zeros = vec![T::ZERO; if h0.is_some() != c0.is_some() { b * h } else { 0 }];
    let initial = pair_or_zeros(&h0, &c0, &zeros)?;
    let p = LstmParams {
        weight_ih: w_ih.as_slice()?,
        weight_hh: w_hh.as_slice()?,
        bias: bias.as_slice()?,
    };
    let x = x.as_slice()?;
    let (out, h_n, c_n) = (out.as_slice_mut()?, h_n.as_slice_mut()?, c_n.as_slice_mut()?);
    let saved = saved.as_mut().map(|s| s.as_slice_mut()).transpose()?;
    let mut inputs = vec![
        Span::of("x", x),
        Span::of("weight_ih", p.weight_ih),
        Span::of("weight_hh", p.weight_hh),
        Span::of("bias", p.bias),
    ];
    if let (Some(h0), Some(c0)) = (&h0, &c0) {
        inputs.extend([Span::of("h0", h0.as_slice()?), Span::of("c0", c0.as_slice()?)]);
    }
    let mut outputs = vec![Span::of("out", out), Span::of("h_n", h_n), Span::of("c_n", c_n)];
    if let Some(saved) = &saved {
        outputs.push(Span::of("saved", saved));
    }
    check_no_alias(&outputs, &inputs)?;
    py.detach(|| functional::forward(p, s, seq, x, initial, out, h_n, c_n, saved))
        .map_err(to_py_err)
}

/// Stateless backward over the forward pass that wrote `saved`.
#[pyfunction]
#[pyo3(signature = (x, weight_ih, weight_hh, bias, h0, c0, saved, d_out, dh_n, dc_n, dx, dh0, dc0,
                    grad_weight_ih, grad_weight_hh, grad_bias, *, lengths=None, reverse=false))]
#[allow(clippy::too_many_arguments)]
fn lstm_backward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weight_ih: &Bound<'_, PyAny>,
    weight_hh: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    h0: Option<Bound<'_, PyAny>>,
    c0: Option<Bound<'_, PyAny>>,
    saved: &Bound<'_, PyAny>,
    d_out: &Bound<'_, PyAny>,
    dh_n: Option<Bound<'_, PyAny>>,
    dc_n: Option<Bound<'_, PyAny>>,
    dx: Option<Bound<'_, PyAny>>,
    dh0: &Bound<'_, PyAny>,
    dc0: &Bound<'_, PyAny>,
    grad_weight_ih: &Bound<'_, PyAny>,
    grad_weight_hh: &Bound<'_, PyAny>,
    grad_bias: &Bound<'_, PyAny>,
    lengths: Option<Bound<'_, PyAny>>,
    reverse: bool,
) -> PyResult<()> {
    let args = BackwardArgs {
        x,
        weight_ih,
        weight_hh,
        bias,
        h0,
        c0,
        saved,
        d_out,
        dh_n,
        dc_n,
        dx,
        dh0,
        dc0,
        grad_weight_ih,
        grad_weight_hh,
        grad_bias,
    };
    let lengths = read_lengths(&lengths, functional_shape(x, weight_ih, weight_hh)?)?;
    let seq = Sequences {
        lengths: lengths.as_deref(),
        reverse,
    };
    match call_dtype(("x", x), weight_ih, weight_hh)? {
        DType::F32 => functional_backward::<f32>(py, args, seq),
        DType::F64 => functional_backward::<f64>(py, args, seq),
    }
}

struct BackwardArgs<'a, 'py> {
    x: &'a Bound<'py, PyAny>,
    weight_ih: &'a Bound<'py, PyAny>,
    weight_hh: &'a Bound<'py, PyAny>,
    bias: &'a Bound<'py, PyAny>,
    h0: Option<Bound<'py, PyAny>>,
    c0: Option<Bound<'py, PyAny>>,
    saved: &'a Bound<'py, PyAny>,
    d_out: &'a Bound<'py, PyAny>,
    dh_n: Option<Bound<'py, PyAny>>,
    dc_n: Option<Bound<'py, PyAny>>,
    dx: Option<Bound<'py, PyAny>>,
    dh0: &'a Bound<'py, PyAny>,
    dc0: &'a Bound<'py, PyAny>,
    grad_weight_ih: &'a Bound<'py, PyAny>,
    grad_weight_hh: &'a Bound<'py, PyAny>,
    grad_bias: &'a Bound<'py, PyAny>,
}

fn functional_backward<T: Element + functional::Pooled>(
    py: Python<'_>,
    a: BackwardArgs<'_, '_>,
    seq: Sequences<'_>,
) -> PyResult<()> {
    let s = functional_shape(a.x, a.weight_ih, a.weight_hh)?;
    let (b, t, i, h) = (s.batch, s.steps, s.input, s.hidden);
    check_args_alias(&[
        ("x", Some(a.x), false),
        ("weight_ih", Some(a.weight_ih), false),
        ("weight_hh", Some(a.weight_hh), false),
        ("bias", Some(a.bias), false),
        ("h0", a.h0.as_ref(), false),
        ("c0", a.c0.as_ref(), false),
        ("saved", Some(a.saved), false),
        ("d_out", Some(a.d_out), false),
        ("dh_n", a.dh_n.as_ref(), false),
        ("dc_n", a.dc_n.as_ref(), false),
        ("dx", a.dx.as_ref(), true),
        ("dh0", Some(a.dh0), true),
        ("dc0", Some(a.dc0), true),
        ("grad_weight_ih", Some(a.grad_weight_ih), true),
        ("grad_weight_hh", Some(a.grad_weight_hh), true),
        ("grad_bias", Some(a.grad_bias), true),
    ])?;
    let x = read_exact::<T>(a.x, "x", &[b, t, i])?;
    let w_ih = read_exact::<T>(a.weight_ih, "weight_ih", &[4 * h, i])?;
    let w_hh = read_exact::<T>(a.weight_hh, "weight_hh", &[4 * h, h])?;
    let bias = read_exact::<T>(a.bias, "bias", &[4 * h])?;
    let h0 = read_optional::<T>(&a.h0, "h0", &[b, h])?;
    let c0 = read_optional::<T>(&a.c0, "c0", &[b, h])?;
    let n = functional::saved_len::<T>(s);
    let saved = read_array::<T>(a.saved, "saved", 1)?;
    if saved.len() != n {
        return Err(PyValueError::new_err(format!(
            "saved: expected lstm_saved_size({b}, {t}, {i}, {h}, {:?}) = {n} elements, got {}",
            T::NAME,
            saved.len()
        )));
    }
    check_aligned("saved", saved.is_aligned())?;
    let d_out = read_exact::<T>(a.d_out, "d_out", &[b, t, h])?;
    let dh_n = read_optional::<T>(&a.dh_n, "dh_n", &[b, h])?;
    let dc_n = read_optional::<T>(&a.dc_n, "dc_n", &[b, h])?;
    let mut dx =
        a.dx.as_ref()
            .map(|o| write_exact::<T>(o, "dx", &[b, t, i]))
            .transpose()?;
    let mut dh0 = write_exact::<T>(a.dh0, "dh0", &[b, h])?;
    let mut dc0 = write_exact::<T>(a.dc0, "dc0", &[b, h])?;
    let mut g_ih = write_exact::<T>(a.grad_weight_ih, "grad_weight_ih", &[4 * h, i])?;
    let mut g_hh = write_exact::<T>(a.grad_weight_hh, "grad_weight_hh", &[4 * h, h])?;
    let mut g_b = write_exact::<T>(a.grad_bias, "grad_bias", &[4 * h])?;
    let zeros = vec![T::ZERO; b * h];
    let initial = pair_or_zeros(&h0, &c0, &zeros)?;
    let d_final = pair_or_zeros(&dh_n, &dc_n, &zeros)?;
    let p = LstmParams {
        weight_ih: w_ih.as_slice()?,
        weight_hh: w_hh.as_slice()?,
        bias: bias.as_slice()?,
    };
    let (x, saved, d_out) = (x.as_slice()?, saved.as_slice()?, d_out.as_slice()?);
    let dx = dx.as_mut().map(|d| d.as_slice_mut()).transpose()?;
    let (dh0, dc0) = (dh0.as_slice_mut()?, dc0.as_slice_mut()?);
    let grads = LstmGrads {
        weight_ih: g_ih.as_slice_mut()?,
        weight_hh: g_hh.as_slice_mut()?,
        bias: g_b.as_slice_mut()?,
    };
    let mut inputs = vec![
        Span::of("x", x),
        Span::of("weight_ih", p.weight_ih),
        Span::of("weight_hh", p.weight_hh),
        Span::of("bias", p.bias),
        Span::of("saved", saved),
        Span::of("d_out", d_out),
    ];
    for (name, arr) in [("h0", &h0), ("c0", &c0), ("dh_n", &dh_n), ("dc_n", &dc_n)] {
        if let Some(arr) = arr {
            inputs.push(Span::of(name, arr.as_slice()?));
        }
    }
    let mut outputs = vec![
        Span::of("dh0", dh0),
        Span::of("dc0", dc0),
        Span::of("grad_weight_ih", grads.weight_ih),
        Span::of("grad_weight_hh", grads.weight_hh),
        Span::of("grad_bias", grads.bias),
    ];
    if let Some(dx) = &dx {
        outputs.push(Span::of("dx", dx));
    }
    check_no_alias(&outputs, &inputs)?;
    py.detach(|| functional::backward(p, s, seq, x, initial, saved, d_out, d_final, dx, grads, dh0, dc0))
        .map_err(to_py_err)
}

/// One time step: writes the new state into h_out, c_out (which may be h
/// and c themselves, updated in place).
#[pyfunction]
#[pyo3(signature = (x_t, weight_ih, weight_hh, bias, h, c, h_out, c_out))]
#[allow(clippy::too_many_arguments)]
fn lstm_step(
    py: Python<'_>,
    x_t: &Bound<'_, PyAny>,
    weight_ih: &Bound<'_, PyAny>,
    weight_hh: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    h: Option<Bound<'_, PyAny>>,
    c: Option<Bound<'_, PyAny>>,
    h_out: &Bound<'_, PyAny>,
    c_out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let args = StepArgs {
        x_t,
        weight_ih,
        weight_hh,
        bias,
        h,
        c,
        h_out,
        c_out,
    };
    match call_dtype(("x_t", x_t), weight_ih, weight_hh)? {
        DType::F32 => functional_step::<f32>(py, args),
        DType::F64 => functional_step::<f64>(py, args),
    }
}

/// A state array read in place, or copied (when it is also an output).
enum StateIn<'py, T: Element> {
    Borrowed(PyReadonlyArrayDyn<'py, T>),
    Copied(Vec<T>),
}

impl<T: Element + Real> StateIn<'_, T> {
    fn as_slice(&self) -> PyResult<&[T]> {
        match self {
            StateIn::Borrowed(arr) => Ok(arr.as_slice()?),
            StateIn::Copied(v) => Ok(v),
        }
    }
}

/// Reads a state array of `shape`, copied when `out` is the same memory
/// (the array itself, or a view of all of it: an in-place step).
fn read_state<'py, T: Element + Real>(
    obj: &Option<Bound<'py, PyAny>>,
    name: &'static str,
    out: &Bound<'py, PyAny>,
    shape: &[usize],
) -> PyResult<Option<StateIn<'py, T>>> {
    let Some(o) = obj else { return Ok(None) };
    let arr = read_exact::<T>(o, name, shape)?;
    Ok(Some(if same_memory(o, out) {
        StateIn::Copied(arr.as_slice()?.to_vec())
    } else {
        StateIn::Borrowed(arr)
    }))
}

/// Whether `a` and `b` are one array, or C-contiguous arrays of one dtype
/// and shape over exactly the same bytes (`h` and `h[:]`).
fn same_memory(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> bool {
    if a.is(b) {
        return true;
    }
    match (a.cast::<PyUntypedArray>(), b.cast::<PyUntypedArray>()) {
        (Ok(a), Ok(b)) => {
            a.is_c_contiguous()
                && b.is_c_contiguous()
                && a.shape() == b.shape()
                && a.dtype().is_equiv_to(&b.dtype())
                && byte_range(a) == byte_range(b)
        }
        _ => false,
    }
}

/// Why a step's arrays could not be borrowed, when two of them share
/// memory (ValueError naming both); None if none do (another thread holds
/// one). The state and its output may be the same memory (in place).
fn step_alias_error<'py>(a: &StepArgs<'_, 'py>) -> Option<PyErr> {
    fn state<'b, 'py>(s: &'b Option<Bound<'py, PyAny>>, out: &Bound<'py, PyAny>) -> Option<&'b Bound<'py, PyAny>> {
        s.as_ref().filter(|s| !same_memory(s, out))
    }
    check_args_alias(&[
        ("x_t", Some(a.x_t), false),
        ("weight_ih", Some(a.weight_ih), false),
        ("weight_hh", Some(a.weight_hh), false),
        ("bias", Some(a.bias), false),
        ("h", state(&a.h, a.h_out), false),
        ("c", state(&a.c, a.c_out), false),
        ("h_out", Some(a.h_out), true),
        ("c_out", Some(a.c_out), true),
    ])
    .err()
}

struct StepArgs<'a, 'py> {
    x_t: &'a Bound<'py, PyAny>,
    weight_ih: &'a Bound<'py, PyAny>,
    weight_hh: &'a Bound<'py, PyAny>,
    bias: &'a Bound<'py, PyAny>,
    h: Option<Bound<'py, PyAny>>,
    c: Option<Bound<'py, PyAny>>,
    h_out: &'a Bound<'py, PyAny>,
    c_out: &'a Bound<'py, PyAny>,
}

fn functional_step<T: Element + functional::Pooled>(py: Python<'_>, a: StepArgs<'_, '_>) -> PyResult<()> {
    // The weights give the sizes: an x_t of another width is what is named.
    let (hidden, input) = weight_sizes(a.weight_ih, a.weight_hh)?;
    let of_dtype = if T::NAME == "float32" {
        "of float32"
    } else {
        "of float64"
    };
    let xs = untyped_shape(a.x_t, "x_t", of_dtype)?;
    if xs.len() != 2 || xs[0] == 0 || xs[1] != input {
        return Err(PyValueError::new_err(format!(
            "x_t: expected shape (B, {input}) with B >= 1 (I = {input}, the weights' input size), got {}",
            shape_str(xs)
        )));
    }
    let s = LstmShape {
        batch: xs[0],
        steps: 1,
        input,
        hidden,
    };
    let (b, i, h) = (s.batch, s.input, s.hidden);
    // A borrow fails when two arguments share memory (or another thread
    // writes one): name the two, on this error path only.
    let named = |e: PyErr| step_alias_error(&a).unwrap_or(e);
    let x = read_exact::<T>(a.x_t, "x_t", &[b, i]).map_err(named)?;
    let w_ih = read_exact::<T>(a.weight_ih, "weight_ih", &[4 * h, i]).map_err(named)?;
    let w_hh = read_exact::<T>(a.weight_hh, "weight_hh", &[4 * h, h]).map_err(named)?;
    let bias = read_exact::<T>(a.bias, "bias", &[4 * h]).map_err(named)?;
    // The state is copied first when the outputs are the state's memory
    // (an in-place step): the kernel reads it all before writing.
    let h0 = read_state::<T>(&a.h, "h", a.h_out, &[b, h]).map_err(named)?;
    let c0 = read_state::<T>(&a.c, "c", a.c_out, &[b, h]).map_err(named)?;
    let mut h_out = write_exact::<T>(a.h_out, "h_out", &[b, h]).map_err(named)?;
    let mut c_out = write_exact::<T>(a.c_out, "c_out", &[b, h]).map_err(named)?;
    let zeros = vec![T::ZERO; if h0.is_some() != c0.is_some() { b * h } else { 0 }];
    let hv = h0.as_ref().map(|v| v.as_slice()).transpose()?;
    let cv = c0.as_ref().map(|v| v.as_slice()).transpose()?;
    let state = match (hv, cv) {
        (None, None) => None,
        (hv, cv) => Some((hv.unwrap_or(&zeros), cv.unwrap_or(&zeros))),
    };
    let p = LstmParams {
        weight_ih: w_ih.as_slice()?,
        weight_hh: w_hh.as_slice()?,
        bias: bias.as_slice()?,
    };
    let x = x.as_slice()?;
    let (h_out, c_out) = (h_out.as_slice_mut()?, c_out.as_slice_mut()?);
    // Arrays, not a Vec: at B1 H10 an allocation is a visible share of a step.
    let outputs = [Span::of("h_out", h_out), Span::of("c_out", c_out)];
    let inputs = [
        Span::of("x_t", x),
        Span::of("weight_ih", p.weight_ih),
        Span::of("weight_hh", p.weight_hh),
        Span::of("bias", p.bias),
    ];
    check_no_alias(&outputs, &inputs)?;
    if let Some((hv, cv)) = state {
        check_no_alias(&outputs, &[Span::of("h", hv), Span::of("c", cv)])?;
    }
    detach_if_large(py, step_macs(b, i, h), || {
        functional::step(p, s, x, state, h_out, c_out)
    })
    .map_err(to_py_err)
}

/// Runs `f` without the GIL when it has `macs` multiply-adds or more than
/// [`STEP_GIL_MACS`]: a small step (B1 H10: a few hundred nanoseconds)
/// keeps the GIL, since releasing it would cost more; a large one lets
/// other threads run.
fn detach_if_large<R: Send>(py: Python<'_>, macs: usize, f: impl FnOnce() -> R + Send) -> R {
    if macs < STEP_GIL_MACS {
        f()
    } else {
        py.detach(f)
    }
}

/// Multiply-adds from which a single step releases the GIL (about 10 us).
const STEP_GIL_MACS: usize = 1 << 16;

/// The multiply-adds of one LSTM step of `b` rows, `i` inputs, `h` units.
fn step_macs(b: usize, i: usize, h: usize) -> usize {
    b.saturating_mul(4 * h).saturating_mul(i + h)
}

// ---------------------------------------------------------------- Adam

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
fn check_adam_config(lr: f64, beta1: f64, beta2: f64, eps: f64, eps_style: &str, dtypes: Vec<String>) -> PyResult<()> {
    let dtypes = dtypes.iter().map(|d| parse_dtype(d)).collect::<PyResult<Vec<_>>>()?;
    adam_config(lr, beta1, beta2, eps, eps_style, dtypes).map(|_| ())
}

/// Adam's step count; the moments are NumPy arrays and the settings
/// attributes of `sincos_rs.Adam`, which wraps this. The count lives here so
/// that an update and its count change in one call (a Ctrl-C between two
/// Python statements cannot split them).
#[pyclass(module = "sincos_rs._core")]
struct AdamCore {
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

// ---------------------------------------------------------------- threads

/// Sets the number of threads the kernels use (0: the default, at most
/// `threads::MAX_THREADS`).
#[pyfunction]
fn set_num_threads(n: &Bound<'_, PyAny>) -> PyResult<()> {
    let expected = format!(
        "n: expected a thread count from 0 (the default) to {}",
        threads::MAX_THREADS
    );
    // An int (numpy's too), not a bool: True is not a thread count.
    if n.is_instance_of::<pyo3::types::PyBool>() || !n.hasattr("__index__")? {
        return Err(PyTypeError::new_err(format!("{expected}, got {}", describe(n))));
    }
    match n.extract::<i128>() {
        Ok(count) if (0..=threads::MAX_THREADS as i128).contains(&count) => {
            threads::set_num_threads(count as usize);
            Ok(())
        }
        _ => Err(PyValueError::new_err(format!("{expected}, got {n}"))),
    }
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

// ------------------------------------------------- testing: kernels, poison

/// Makes every later call run the kernel `name` ("auto", "lanes", "rows" or
/// "gemm"), whatever the shape; "auto" restores the choice by shape. For the
/// tests and the fuzzer only: a forward and its backward must run under the
/// same setting (the saved layout is the kernel's).
#[pyfunction]
fn _set_kernel(name: &str) -> PyResult<()> {
    let kernel = match name {
        "auto" => Kernel::Auto,
        "lanes" => Kernel::Lanes,
        "rows" => Kernel::Rows,
        "gemm" => Kernel::Gemm,
        "units" => Kernel::Units,
        _ => {
            return Err(PyValueError::new_err(format!(
                "name: expected one of 'auto', 'lanes', 'rows', 'gemm', 'units', got {name:?}"
            )))
        }
    };
    crate::lstm::force_kernel(kernel);
    Ok(())
}

/// The kernel name set by `_set_kernel` ("auto" unless one is forced).
#[pyfunction]
fn _forced_kernel() -> &'static str {
    match crate::lstm::forced_kernel() {
        Kernel::Auto => "auto",
        Kernel::Lanes => "lanes",
        Kernel::Rows => "rows",
        Kernel::Gemm => "gemm",
        Kernel::Units => "units",
    }
}

/// Hands the kernels the host's OpenMP entry points by address
/// (`GOMP_parallel`, `omp_get_thread_num`, `omp_get_max_threads` of one
/// loaded libgomp, as `sincos_rs.torch` finds torch's): parallel passes then
/// run on the host's team (`threads/openmp.rs`). Zeros unregister. The
/// addresses are trusted: only `sincos_rs.torch` calls this, with ctypes'
/// lookups of the symbols in the library torch loaded.
#[pyfunction]
fn _set_openmp(parallel: usize, thread_num: usize, max_threads: usize) {
    // SAFETY: see above (the caller's promise).
    unsafe { threads::openmp::set_runtime(parallel, thread_num, max_threads) }
}

/// Whether parallel passes run on a host OpenMP team now.
#[pyfunction]
fn _openmp_active() -> bool {
    threads::openmp::active()
}

/// Fills the kernels' scratch with NaN when sized (see `lstm::poison`), so
/// a read of memory a call never wrote shows; for the fuzzer.
#[pyfunction]
fn _set_poison(on: bool) {
    crate::lstm::poison::set_enabled(on);
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SeedNetworkCore>()?;
    m.add_class::<AdamCore>()?;
    m.add_function(wrap_pyfunction!(check_adam_config, m)?)?;
    m.add_function(wrap_pyfunction!(lstm_saved_size, m)?)?;
    m.add_function(wrap_pyfunction!(lstm_forward, m)?)?;
    m.add_function(wrap_pyfunction!(lstm_backward, m)?)?;
    m.add_function(wrap_pyfunction!(lstm_step, m)?)?;
    m.add_function(wrap_pyfunction!(chain::cell_saved_size, m)?)?;
    m.add_function(wrap_pyfunction!(chain::cell_forward, m)?)?;
    m.add_function(wrap_pyfunction!(chain::cell_backward, m)?)?;
    m.add_function(wrap_pyfunction!(chain::chain_weight_grads, m)?)?;
    // Before any kernel runs: the thread pools restart in a forked child.
    threads::fork::watch();
    // rust-numpy finds NumPy's C API lazily, on first use, partly by running
    // Python code (a version check), and panics if that fails: a Ctrl-C
    // landing there, in the first call that touches an array, became a
    // PanicException. So find it now, at import (fallibly: an error here is
    // an ImportError), and touch the API and the borrow checker once.
    numpy::get_array_module(m.py())?;
    let _ = zeros::<f64>(m.py(), &[0])?.try_readonly();
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(_set_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(_forced_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(_set_poison, m)?)?;
    m.add_function(wrap_pyfunction!(_set_openmp, m)?)?;
    m.add_function(wrap_pyfunction!(_openmp_active, m)?)?;
    m.add("PARAM_NAMES", PARAM_NAMES.to_vec())?;
    m.add("NUM_THREADS_ENV_VAR", threads::ENV_VAR)?;
    m.add("SIMD_ENV_VAR", crate::SIMD_ENV_VAR)?;
    m.add("MAX_THREADS", threads::MAX_THREADS)?;
    Ok(())
}
