//! `unitls._native`: unitls' Rust engines, driven sans-I/O from Python.
//!
//! One generic `Connection` (conn.rs) runs any engine's `TlsSession` (session.rs); the rustls
//! engine is `config.rs` (configurations) and `rustls_session.rs` (the per-connection core); the
//! NSS engine is `nss/` (NSS loaded at run time).
//! Only the engine modules of the Python package (`unitls.rustls`, ...) import this module.

use pyo3::prelude::*;

/// Rust allocations of this extension (rustls' per-record buffers above all) use mimalloc, with
/// per-thread free lists, rather than the process's glibc malloc: there, bulk throughput over
/// TCP fell from ~2.2x the stdlib's to ~1.3x after a burst of short connections had grown and
/// fragmented glibc's per-thread arenas (`MALLOC_ARENA_MAX=1` restored it: an allocator effect).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod buffers;
mod config;
mod conn;
mod errors;
mod keyinfo;
mod keylog;
mod nss;
mod pq;
mod resumption;
mod rustls_session;
mod session;
mod sockio;

/// Version of the rustls crate this module is built with (kept in step with `Cargo.lock`).
const RUSTLS_VERSION: &str = "0.23.46";

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<config::ClientConfig>()?;
    m.add_class::<config::ServerConfig>()?;
    m.add_class::<conn::Connection>()?;
    m.add_class::<resumption::ClientSession>()?;
    m.add_class::<sockio::SocketCore>()?;
    m.add_class::<sockio::SSLSocketCore>()?;
    m.add_class::<sockio::SpinWait>()?;
    m.add_function(wrap_pyfunction!(config::supported_cipher_suites, m)?)?;
    m.add_class::<nss::NssClientConfig>()?;
    m.add_class::<nss::NssServerConfig>()?;
    m.add_function(wrap_pyfunction!(nss::nss_status, m)?)?;
    m.add_function(wrap_pyfunction!(nss::nss_supported_cipher_suites, m)?)?;
    m.add("RUSTLS_VERSION", RUSTLS_VERSION)?;
    Ok(())
}
