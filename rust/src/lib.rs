//! `unitls._rustls`: the rustls engine of unitls, driven sans-I/O from Python.
//!
//! Only `unitls.rustls` (the Python wrapper) imports this module.

use pyo3::prelude::*;

mod config;
mod conn;
mod errors;
mod pq;

/// Version of the rustls crate this module is built with (kept in step with `Cargo.lock`).
const RUSTLS_VERSION: &str = "0.23.46";

#[pymodule]
fn _rustls(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<config::ClientConfig>()?;
    m.add_class::<config::ServerConfig>()?;
    m.add_class::<conn::Connection>()?;
    m.add_function(wrap_pyfunction!(config::supported_cipher_suites, m)?)?;
    m.add("RUSTLS_VERSION", RUSTLS_VERSION)?;
    Ok(())
}
