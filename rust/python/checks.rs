//! Argument checks shared by every binding: arrays borrowed and checked
//! (type, dtype, ndim, shape, C-contiguity, alignment, finiteness), no
//! output sharing memory with another argument, core errors as Python
//! exceptions, and fallible allocation of new arrays.

use numpy::npyffi::{npy_intp, PY_ARRAY_API};
use numpy::BorrowError;
use numpy::{
    Element, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFloatingPointError, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::adam::EpsilonStyle;
use crate::error::Error;
use crate::lstm::LstmShape;
use crate::simd::Real;

pub(super) fn to_py_err(e: Error) -> PyErr {
    match e {
        Error::Order(msg) => PyRuntimeError::new_err(msg),
        Error::Diverged(msg) => PyFloatingPointError::new_err(msg),
        Error::TooLarge(msg) => PyMemoryError::new_err(msg),
        other => PyValueError::new_err(other.to_string()),
    }
}

pub(super) fn shape_str(dims: &[usize]) -> String {
    crate::error::shape_str(dims)
}

/// Describes what `obj` is, for messages ("list", "numpy.ndarray of float64").
pub(super) fn describe(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
}

/// `obj` as an array of `T` with `ndim` dimensions (any if None),
/// C-contiguous and aligned, not yet borrowed; TypeError/ValueError naming
/// `name` otherwise.
pub(super) fn array_arg<'py, T: Element + Real>(
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
pub(super) fn borrow_read<'py, T: Element>(
    array: &Bound<'py, PyArrayDyn<T>>,
    name: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    array.try_readonly().map_err(|_| {
        PyValueError::new_err(format!(
            "{name}: is being written by another call (from another thread?) and cannot be read now"
        ))
    })
}

/// Borrows a checked array for writing.
pub(super) fn borrow_write<'py, T: Element>(
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
pub(super) fn read_array<'py, T: Element + Real>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndim: usize,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    borrow_read(&array_arg::<T>(obj, name, Some(ndim))?, name)
}

/// The bytes an array's elements occupy, `[start, end)` (exact for the
/// C-contiguous arrays [`array_arg`] lets through).
pub(super) fn byte_range(array: &Bound<'_, PyUntypedArray>) -> (usize, usize) {
    // SAFETY: reading the data pointer of a live array object.
    let start = unsafe { (*array.as_array_ptr()).fields.data } as usize;
    (start, start + array.len() * array.dtype().itemsize())
}

/// One array argument of a call, for [`check_no_aliasing`].
pub(super) struct ArrayUse<'a, 'py> {
    pub(super) name: String,
    pub(super) array: &'a Bound<'py, PyUntypedArray>,
    pub(super) written: bool,
}

/// Raises ValueError naming both arguments if an array the call writes
/// shares memory with any other array argument. NumPy's borrow flags only
/// link arrays with one base object; this compares the memory itself, so
/// two arrays made by `np.frombuffer` on one buffer are caught too. Arrays
/// only read may overlap.
pub(super) fn check_no_aliasing(uses: &[ArrayUse<'_, '_>]) -> PyResult<()> {
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
pub(super) fn check_finite_named<T: Real>(label: &str, data: &[T]) -> PyResult<()> {
    match crate::error::check_finite("", data) {
        Err(Error::NonFinite { index, .. }) => Err(PyValueError::new_err(format!(
            "{label}: all values must be finite, found NaN or inf at flat index {index}"
        ))),
        _ => Ok(()),
    }
}

/// The shape check every caller needs: `name` must be exactly `expected`.
pub(super) fn check_shape(name: &str, got: &[usize], expected: &[usize]) -> PyResult<()> {
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
pub(super) fn zeros<'py, T: Element>(py: Python<'py>, shape: &[usize]) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
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
pub(super) fn new_array<'py, T: Element + Real>(
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
pub(super) enum DType {
    F32,
    F64,
}

pub(super) fn parse_dtype(s: &str) -> PyResult<DType> {
    match s {
        "float32" => Ok(DType::F32),
        "float64" => Ok(DType::F64),
        other => Err(PyValueError::new_err(format!(
            "dtype: expected 'float32' or 'float64', got {other:?}"
        ))),
    }
}

pub(super) fn parse_style(s: &str) -> PyResult<EpsilonStyle> {
    match s {
        "tensorflow" => Ok(EpsilonStyle::TensorFlow),
        "pytorch" => Ok(EpsilonStyle::PyTorch),
        other => Err(PyValueError::new_err(format!(
            "eps_style: expected 'tensorflow' or 'pytorch', got {other:?}"
        ))),
    }
}

/// An argument's memory, for the aliasing checks: [start, end) in bytes.
pub(super) struct Span {
    name: &'static str,
    start: usize,
    end: usize,
}

impl Span {
    pub(super) fn of<T>(name: &'static str, data: &[T]) -> Span {
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
pub(super) fn check_no_alias(outputs: &[Span], inputs: &[Span]) -> PyResult<()> {
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
pub(super) fn check_args_alias(args: &[(&str, Option<&Bound<'_, PyAny>>, bool)]) -> PyResult<()> {
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
pub(super) fn call_dtype(
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
pub(super) fn untyped_shape<'a>(obj: &'a Bound<'_, PyAny>, name: &str, expected: &str) -> PyResult<&'a [usize]> {
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
pub(super) fn weight_sizes(weight_ih: &Bound<'_, PyAny>, weight_hh: &Bound<'_, PyAny>) -> PyResult<(usize, usize)> {
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
pub(super) fn read_exact<'py, T: Element + Real>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    shape: &[usize],
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    let a = read_array::<T>(obj, name, shape.len())?;
    check_shape(name, a.shape(), shape)?;
    check_aligned(name, a.is_aligned())?;
    Ok(a)
}

/// Borrows `name` as a writable, C-contiguous, aligned array of `T` of exactly `shape`.
pub(super) fn write_exact<'py, T: Element + Real>(
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
pub(super) fn write_typed<'py, T: Element + Real>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
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

pub(super) fn check_aligned(name: &str, aligned: bool) -> PyResult<()> {
    if aligned {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "{name}: expected an aligned array (copy it with np.array({name}))"
        )))
    }
}

/// An optional array argument: None, or read as [`read_exact`].
pub(super) fn read_optional<'py, T: Element + Real>(
    obj: &Option<Bound<'py, PyAny>>,
    name: &'static str,
    shape: &[usize],
) -> PyResult<Option<PyReadonlyArrayDyn<'py, T>>> {
    obj.as_ref().map(|o| read_exact::<T>(o, name, shape)).transpose()
}

/// The sizes (B, T, I, H) from x (B, T, ·), weight_ih (4H, I) and
/// weight_hh (4H, H); x's width is checked against I when it is read.
pub(super) fn functional_shape(
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
pub(super) fn read_lengths(lengths: &Option<Bound<'_, PyAny>>, s: LstmShape) -> PyResult<Option<Vec<usize>>> {
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
pub(super) fn pair_or_zeros<'a, T: Element + Real>(
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
