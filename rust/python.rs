//! The Python binding, `sincos_rs._core`: the only module that knows Python
//! (this file and `python/`).
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
//!
//! Files: `python/checks.rs` (the argument checks every call shares),
//! `python/gil.rs` (when a call releases the GIL), `python/seed.rs` (the
//! seed network), `python/functional.rs` (the functional LSTM),
//! `python/chain.rs` (one step at a time, and a chain's weight gradients),
//! `python/adam.rs` (Adam); here the module itself, the thread count and
//! the hooks the tests use.

use numpy::PyArrayMethods;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::lstm::Kernel;
use crate::model::PARAM_NAMES;
use crate::threads;

mod adam;
mod chain;
mod checks;
mod functional;
mod gil;
mod seed;

use adam::{check_adam_config, AdamCore};
use checks::{describe, zeros};
use functional::{lstm_backward, lstm_forward, lstm_saved_size, lstm_step};
use seed::SeedNetworkCore;

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
