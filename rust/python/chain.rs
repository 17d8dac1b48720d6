//! The binding of `lstm::chain`: one step at a time with the weight
//! gradients of a chain of steps made at once (what
//! `sincos_rs.torch.LSTMCell` and the LSTM at T = 1 run). Arrays are
//! checked as in the functional calls: dtype, shape, contiguity,
//! alignment, no output sharing memory with another argument.

use numpy::Element;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::checks::{
    call_dtype, check_args_alias, check_no_alias, describe, parse_dtype, read_exact, read_optional, shape_str,
    to_py_err, untyped_shape, weight_sizes, write_exact, DType, Span,
};
use super::gil::{detach_if_large, step_macs};
use crate::lstm::functional::{self, Pooled};
use crate::lstm::{chain, ChainRows, LstmGrads, LstmParams, LstmShape};

/// Elements of `dtype` the activations `cell_forward` saves for one step.
#[pyfunction]
pub(super) fn cell_saved_size(batch: usize, input_size: usize, hidden_size: usize, dtype: &str) -> PyResult<usize> {
    let s = LstmShape {
        batch,
        steps: 1,
        input: input_size,
        hidden: hidden_size,
    };
    match parse_dtype(dtype)? {
        DType::F32 => functional::check_sizes::<f32>(s),
        DType::F64 => functional::check_sizes::<f64>(s),
    }
    .map_err(to_py_err)?;
    Ok(chain::saved_len(batch, input_size, hidden_size))
}

/// The batch size from a (B, width) array, or ValueError naming it.
fn rows_of(obj: &Bound<'_, PyAny>, name: &str, width: usize, what: &str) -> PyResult<usize> {
    let shape = untyped_shape(obj, name, "of float32 or float64")?;
    if shape.len() != 2 || shape[0] == 0 || shape[1] != width {
        return Err(PyValueError::new_err(format!(
            "{name}: expected shape (B, {width}) with B >= 1 ({what}), got {}",
            shape_str(shape)
        )));
    }
    Ok(shape[0])
}

/// One step, x (B, I) from (h0, c0) or zeros: writes h, c (B, H) and
/// `saved` (unless None).
#[pyfunction]
#[pyo3(signature = (x, weight_ih, weight_hh, bias, h0, c0, h, c, saved))]
#[allow(clippy::too_many_arguments)]
pub(super) fn cell_forward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weight_ih: &Bound<'_, PyAny>,
    weight_hh: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    h0: Option<Bound<'_, PyAny>>,
    c0: Option<Bound<'_, PyAny>>,
    h: &Bound<'_, PyAny>,
    c: &Bound<'_, PyAny>,
    saved: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let args = [x, weight_ih, weight_hh, bias, h, c];
    match call_dtype(("x", x), weight_ih, weight_hh)? {
        DType::F32 => forward::<f32>(py, args, h0, c0, saved),
        DType::F64 => forward::<f64>(py, args, h0, c0, saved),
    }
}

fn forward<T: Element + Pooled>(
    py: Python<'_>,
    [x, weight_ih, weight_hh, bias, h, c]: [&Bound<'_, PyAny>; 6],
    h0: Option<Bound<'_, PyAny>>,
    c0: Option<Bound<'_, PyAny>>,
    saved: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let (hid, inp) = weight_sizes(weight_ih, weight_hh)?;
    let b = rows_of(x, "x", inp, "I, the weights' input size")?;
    check_args_alias(&[
        ("x", Some(x), false),
        ("weight_ih", Some(weight_ih), false),
        ("weight_hh", Some(weight_hh), false),
        ("bias", Some(bias), false),
        ("h0", h0.as_ref(), false),
        ("c0", c0.as_ref(), false),
        ("h", Some(h), true),
        ("c", Some(c), true),
        ("saved", saved.as_ref(), true),
    ])?;
    let x = read_exact::<T>(x, "x", &[b, inp])?;
    let w_ih = read_exact::<T>(weight_ih, "weight_ih", &[4 * hid, inp])?;
    let w_hh = read_exact::<T>(weight_hh, "weight_hh", &[4 * hid, hid])?;
    let bias = read_exact::<T>(bias, "bias", &[4 * hid])?;
    let h0 = read_optional::<T>(&h0, "h0", &[b, hid])?;
    let c0 = read_optional::<T>(&c0, "c0", &[b, hid])?;
    let mut h = write_exact::<T>(h, "h", &[b, hid])?;
    let mut c = write_exact::<T>(c, "c", &[b, hid])?;
    let n = chain::saved_len(b, inp, hid);
    let mut saved = saved.as_ref().map(|o| write_exact::<T>(o, "saved", &[n])).transpose()?;
    let zeros = vec![T::ZERO; if h0.is_some() != c0.is_some() { b * hid } else { 0 }];
    let initial = super::checks::pair_or_zeros(&h0, &c0, &zeros)?;
    let p = LstmParams {
        weight_ih: w_ih.as_slice()?,
        weight_hh: w_hh.as_slice()?,
        bias: bias.as_slice()?,
    };
    let x = x.as_slice()?;
    let (h, c) = (h.as_slice_mut()?, c.as_slice_mut()?);
    let saved = saved.as_mut().map(|s| s.as_slice_mut()).transpose()?;
    let mut inputs = vec![
        Span::of("x", x),
        Span::of("weight_ih", p.weight_ih),
        Span::of("weight_hh", p.weight_hh),
        Span::of("bias", p.bias),
    ];
    if let Some((h0, c0)) = initial {
        inputs.extend([Span::of("h0", h0), Span::of("c0", c0)]);
    }
    let mut outputs = vec![Span::of("h", h), Span::of("c", c)];
    if let Some(saved) = &saved {
        outputs.push(Span::of("saved", saved));
    }
    check_no_alias(&outputs, &inputs)?;
    detach_if_large(py, step_macs(b, inp, hid), || {
        chain::forward(p, (b, inp, hid), x, initial, h, c, saved)
    })
    .map_err(to_py_err)
}

/// The backward of a `cell_forward` step that saved `saved` from `c0`
/// (B, H, the same one, or None: zero), without
/// weight gradients: writes dz (B, 4H), dh0, dc0 (B, H) and dx (B, I)
/// unless None, from the gradients by h (`d_out`, `dh_n`: they add up)
/// and c (`dc_n`), each (B, H) or None (zero).
#[pyfunction]
#[pyo3(signature = (weight_ih, weight_hh, saved, c0, d_out, dh_n, dc_n, dz, dx, dh0, dc0))]
#[allow(clippy::too_many_arguments)]
pub(super) fn cell_backward(
    py: Python<'_>,
    weight_ih: &Bound<'_, PyAny>,
    weight_hh: &Bound<'_, PyAny>,
    saved: &Bound<'_, PyAny>,
    c0: Option<Bound<'_, PyAny>>,
    d_out: Option<Bound<'_, PyAny>>,
    dh_n: Option<Bound<'_, PyAny>>,
    dc_n: Option<Bound<'_, PyAny>>,
    dz: &Bound<'_, PyAny>,
    dx: Option<Bound<'_, PyAny>>,
    dh0: &Bound<'_, PyAny>,
    dc0: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let args = [weight_ih, weight_hh, saved, dz, dh0, dc0];
    let grads = [c0, d_out, dh_n, dc_n];
    match call_dtype(("dz", dz), weight_ih, weight_hh)? {
        DType::F32 => backward::<f32>(py, args, grads, dx),
        DType::F64 => backward::<f64>(py, args, grads, dx),
    }
}

fn backward<T: Element + Pooled>(
    py: Python<'_>,
    [weight_ih, weight_hh, saved, dz, dh0, dc0]: [&Bound<'_, PyAny>; 6],
    [c0, d_out, dh_n, dc_n]: [Option<Bound<'_, PyAny>>; 4],
    dx: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let (hid, inp) = weight_sizes(weight_ih, weight_hh)?;
    let b = rows_of(dz, "dz", 4 * hid, "4H, for weight_hh's H")?;
    check_args_alias(&[
        ("weight_ih", Some(weight_ih), false),
        ("weight_hh", Some(weight_hh), false),
        ("saved", Some(saved), false),
        ("c0", c0.as_ref(), false),
        ("d_out", d_out.as_ref(), false),
        ("dh_n", dh_n.as_ref(), false),
        ("dc_n", dc_n.as_ref(), false),
        ("dz", Some(dz), true),
        ("dx", dx.as_ref(), true),
        ("dh0", Some(dh0), true),
        ("dc0", Some(dc0), true),
    ])?;
    let w_ih = read_exact::<T>(weight_ih, "weight_ih", &[4 * hid, inp])?;
    let w_hh = read_exact::<T>(weight_hh, "weight_hh", &[4 * hid, hid])?;
    let saved = read_exact::<T>(saved, "saved", &[chain::saved_len(b, inp, hid)])?;
    let c0 = read_optional::<T>(&c0, "c0", &[b, hid])?;
    let d_out = read_optional::<T>(&d_out, "d_out", &[b, hid])?;
    let dh_n = read_optional::<T>(&dh_n, "dh_n", &[b, hid])?;
    let dc_n = read_optional::<T>(&dc_n, "dc_n", &[b, hid])?;
    let mut dz = write_exact::<T>(dz, "dz", &[b, 4 * hid])?;
    let mut dx = dx.as_ref().map(|o| write_exact::<T>(o, "dx", &[b, inp])).transpose()?;
    let mut dh0 = write_exact::<T>(dh0, "dh0", &[b, hid])?;
    let mut dc0 = write_exact::<T>(dc0, "dc0", &[b, hid])?;
    let (w_ih, w_hh) = (w_ih.as_slice()?, w_hh.as_slice()?);
    let saved = saved.as_slice()?;
    let c0 = c0.as_ref().map(|a| a.as_slice()).transpose()?;
    let d_out = d_out.as_ref().map(|a| a.as_slice()).transpose()?;
    let dh_n = dh_n.as_ref().map(|a| a.as_slice()).transpose()?;
    let dc_n = dc_n.as_ref().map(|a| a.as_slice()).transpose()?;
    let dz = dz.as_slice_mut()?;
    let dx = dx.as_mut().map(|d| d.as_slice_mut()).transpose()?;
    let (dh0, dc0) = (dh0.as_slice_mut()?, dc0.as_slice_mut()?);
    let mut inputs = vec![
        Span::of("weight_ih", w_ih),
        Span::of("weight_hh", w_hh),
        Span::of("saved", saved),
    ];
    for (name, arr) in [("c0", c0), ("d_out", d_out), ("dh_n", dh_n), ("dc_n", dc_n)] {
        if let Some(arr) = arr {
            inputs.push(Span::of(name, arr));
        }
    }
    let mut outputs = vec![Span::of("dz", dz), Span::of("dh0", dh0), Span::of("dc0", dc0)];
    if let Some(dx) = &dx {
        outputs.push(Span::of("dx", dx));
    }
    check_no_alias(&outputs, &inputs)?;
    detach_if_large(py, step_macs(b, inp, hid), || {
        chain::backward(
            (w_ih, w_hh),
            (b, inp, hid),
            saved,
            c0,
            d_out,
            dh_n,
            dc_n,
            dz,
            dx,
            dh0,
            dc0,
        )
    })
    .map_err(to_py_err)
}

/// The weight gradients of a chain of `cell_backward` steps (overwritten)
/// from their rows: dz (R, 4H), x (R, I) and h0 (R, H) or None (zero), each
/// one array of every step's rows stacked, or a list with one array per
/// call (h0's items may be None), in one order.
#[pyfunction]
#[pyo3(signature = (dz, x, h0, grad_weight_ih, grad_weight_hh, grad_bias))]
pub(super) fn chain_weight_grads(
    py: Python<'_>,
    dz: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    h0: Option<Bound<'_, PyAny>>,
    grad_weight_ih: &Bound<'_, PyAny>,
    grad_weight_hh: &Bound<'_, PyAny>,
    grad_bias: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let parts = chain_parts(dz, x, h0.as_ref())?;
    let Some((first, _, _)) = parts.first() else {
        return Err(PyValueError::new_err(
            "dz: expected at least one array of rows, got an empty list",
        ));
    };
    let grads = [grad_weight_ih, grad_weight_hh, grad_bias];
    match call_dtype(
        (&parts_name("dz", 0, parts.len()), first),
        grad_weight_ih,
        grad_weight_hh,
    )? {
        DType::F32 => weight_grads::<f32>(py, &parts, grads),
        DType::F64 => weight_grads::<f64>(py, &parts, grads),
    }
}

/// An argument's name, or its item's in a list of `n` parts.
fn parts_name(name: &str, k: usize, n: usize) -> String {
    if n == 1 {
        name.to_string()
    } else {
        format!("{name}[{k}]")
    }
}

/// One call's rows of a chain: dz, x, h0 (None: zero).
type PartArgs<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

/// dz, x and h0 as parts: one each (arrays), or lists of the same length.
fn chain_parts<'py>(
    dz: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    h0: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<PartArgs<'py>>> {
    let as_list = |obj: &Bound<'py, PyAny>| -> Option<Vec<Bound<'py, PyAny>>> {
        obj.cast::<PyList>().ok().map(|l| l.iter().collect())
    };
    let Some(dzs) = as_list(dz) else {
        return Ok(vec![(dz.clone(), x.clone(), h0.cloned())]);
    };
    let n = dzs.len();
    let xs = as_list(x).filter(|xs| xs.len() == n).ok_or_else(|| {
        PyValueError::new_err(format!("x: expected a list of {n} arrays, as dz, got {}", describe(x)))
    })?;
    let h0s: Vec<Option<Bound<'py, PyAny>>> = match h0 {
        None => vec![None; n],
        Some(h0) => as_list(h0)
            .filter(|h0s| h0s.len() == n)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "h0: expected None or a list of {n} arrays or None, as dz, got {}",
                    describe(h0)
                ))
            })?
            .into_iter()
            .map(|h| (!h.is_none()).then_some(h))
            .collect(),
    };
    Ok(dzs.into_iter().zip(xs).zip(h0s).map(|((d, x), h)| (d, x, h)).collect())
}

fn weight_grads<T: Element + Pooled>(
    py: Python<'_>,
    parts: &[PartArgs<'_>],
    [g_ih, g_hh, g_b]: [&Bound<'_, PyAny>; 3],
) -> PyResult<()> {
    let hid = untyped_shape(g_hh, "grad_weight_hh", "(4H, H)")?
        .get(1)
        .copied()
        .unwrap_or(0);
    let inp = untyped_shape(g_ih, "grad_weight_ih", "(4H, I)")?
        .get(1)
        .copied()
        .unwrap_or(0);
    let n = parts.len();
    let names: Vec<[String; 3]> = (0..n)
        .map(|k| ["dz", "x", "h0"].map(|name| parts_name(name, k, n)))
        .collect();
    let mut args: Vec<(&str, Option<&Bound<'_, PyAny>>, bool)> = Vec::with_capacity(3 * n + 3);
    for ((dz, x, h0), [dz_name, x_name, h0_name]) in parts.iter().zip(&names) {
        args.extend([(dz_name.as_str(), Some(dz), false), (x_name.as_str(), Some(x), false)]);
        args.push((h0_name.as_str(), h0.as_ref(), false));
    }
    args.extend([
        ("grad_weight_ih", Some(g_ih), true),
        ("grad_weight_hh", Some(g_hh), true),
        ("grad_bias", Some(g_b), true),
    ]);
    check_args_alias(&args)?;
    let mut arrays = Vec::with_capacity(n);
    let mut rows = 0usize;
    for ((dz, x, h0), [dz_name, x_name, h0_name]) in parts.iter().zip(&names) {
        let part_rows = rows_of(dz, dz_name, 4 * hid, "4H, for grad_weight_hh's H")?;
        let dz = read_exact::<T>(dz, dz_name, &[part_rows, 4 * hid])?;
        let x = read_exact::<T>(x, x_name, &[part_rows, inp])?;
        let h0 = h0
            .as_ref()
            .map(|h| read_exact::<T>(h, h0_name, &[part_rows, hid]))
            .transpose()?;
        arrays.push((dz, x, h0));
        rows = rows.saturating_add(part_rows);
    }
    let mut g_ih = write_exact::<T>(g_ih, "grad_weight_ih", &[4 * hid, inp])?;
    let mut g_hh = write_exact::<T>(g_hh, "grad_weight_hh", &[4 * hid, hid])?;
    let mut g_b = write_exact::<T>(g_b, "grad_bias", &[4 * hid])?;
    let mut chain_rows = Vec::with_capacity(n);
    for (dz, x, h0) in &arrays {
        chain_rows.push(ChainRows {
            dz: dz.as_slice()?,
            x: x.as_slice()?,
            h0: h0.as_ref().map(|a| a.as_slice()).transpose()?,
        });
    }
    let grads = LstmGrads {
        weight_ih: g_ih.as_slice_mut()?,
        weight_hh: g_hh.as_slice_mut()?,
        bias: g_b.as_slice_mut()?,
    };
    let mut inputs = Vec::with_capacity(3 * n);
    for part in &chain_rows {
        inputs.extend([Span::of("dz", part.dz), Span::of("x", part.x)]);
        if let Some(h0) = part.h0 {
            inputs.push(Span::of("h0", h0));
        }
    }
    let outputs = [
        Span::of("grad_weight_ih", grads.weight_ih),
        Span::of("grad_weight_hh", grads.weight_hh),
        Span::of("grad_bias", grads.bias),
    ];
    check_no_alias(&outputs, &inputs)?;
    detach_if_large(py, step_macs(rows, inp, hid), || {
        chain::weight_grads((inp, hid), &chain_rows, grads)
    })
    .map_err(to_py_err)
}
