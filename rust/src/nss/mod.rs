//! The NSS engine: Mozilla's NSS 3.87+ (with NSPR), opened at run time, driven sans-I/O.
//!
//! - `ffi`: the C declarations, loading (dlopen) and the once-per-process initialisation.
//! - `io`: the NSPR I/O layer over in-memory queues.
//! - `pki`: certificates, keys and trust anchors from memory; peer verification.
//! - `hello`: reading a ClientHello before NSS does (server chain and ALPN choice).
//! - `config`: `NssClientConfig` / `NssServerConfig` (Python classes).
//! - `session`: `NssSession`, the `TlsSession` the generic `Connection` runs.

mod config;
mod ffi;
mod hello;
mod io;
mod pki;
mod session;

pub use config::{
    nss_status, nss_supported_cipher_suites, nss_supported_groups, NssClientConfig, NssServerConfig,
};
