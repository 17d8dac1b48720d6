//! The functional LSTM's binding: `lstm_forward`, `lstm_backward`,
//! `lstm_step` and `lstm_saved_size`, every output preallocated by the
//! caller, the GIL released around the kernels.

use numpy::{Element, PyArrayDescrMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::checks::{
    byte_range, call_dtype, check_aligned, check_args_alias, check_no_alias, functional_shape, pair_or_zeros,
    parse_dtype, read_array, read_exact, read_lengths, read_optional, shape_str, to_py_err, untyped_shape,
    weight_sizes, write_exact, write_typed, DType, Span,
};
use super::gil::{detach_if_large, step_macs};
use crate::lstm::{functional, LstmGrads, LstmParams, LstmShape, Sequences};
use crate::simd::Real;

/// Elements of `dtype` the saved activations of a forward pass take.
#[pyfunction]
pub(super) fn lstm_saved_size(
    batch: usize,
    steps: usize,
    input_size: usize,
    hidden_size: usize,
    dtype: &str,
) -> PyResult<usize> {
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
pub(super) fn lstm_forward(
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
pub(super) fn lstm_backward(
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
pub(super) fn lstm_step(
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
