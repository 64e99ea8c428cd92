//! `unitls._native`: unitls' Rust engines, driven sans-I/O from Python.
//!
//! One generic `Connection` (conn.rs) runs any engine's `TlsSession` (session.rs); the rustls
//! engine is `config.rs` (configurations) and `rustls_session.rs` (the per-connection core); the
//! NSS engine is `nss/` (NSS loaded at run time).
//! Only the engine modules of the Python package (`unitls.rustls`, ...) import this module.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::prelude::*;

/// Rust allocations of this extension (rustls' per-record buffers above all) use mimalloc, with
/// per-thread free lists, rather than the process's glibc malloc: there, bulk throughput over
/// TCP fell from ~2.2x the stdlib's to ~1.3x after a burst of short connections had grown and
/// fragmented glibc's per-thread arenas (`MALLOC_ARENA_MAX=1` restored it: an allocator effect).
///
/// One change to mimalloc's policy, on the `TLSBuffer` path only (`keep_in_place`, around the
/// engine's `feed`/`read` in `conn.rs`): a `realloc` whose new size fits the block it already
/// has (blocks up to `KEEP_IN_PLACE`) keeps that block, even when it shrinks. rustls shrinks its
/// receive buffer to 4 KiB whenever it has consumed everything in it, i.e. after every record of
/// a bulk stream, then grows it back 4 KiB per `read_tls`: each 16 KiB record cost a shrink and three grows, each a
/// new block and a copy (mimalloc moves a block that shrinks below half its size), ~8% of
/// rustls' in-memory bulk time (`perf`). A connection that has received a full record
/// therefore keeps a 32 KiB receive buffer while idle, where OpenSSL keeps its own ~17 KiB one.
/// Applied to every `realloc` of the extension, the same rule made the bridge's bulk download
/// 15% slower after a few thousand handshakes in the same process, and applied on the native
/// socket path too (`sockio.rs`, which feeds rustls 20 KiB at a time) still 3-4% slower there;
/// neither is understood, so the rule stays where it was measured to help.
///
/// And one block kept aside (`SPARE`): rustls allocates a record-sized buffer for every record it
/// seals (freed once the record is taken out) and for every record's plaintext it opens (freed
/// once read), and mimalloc hands out the next free block of its page each time, cycling through
/// the page (and retiring it whenever it empties: 2% of rustls' in-memory bulk time in `perf`).
/// A freed block of 16-17 KiB is kept, if none is, and the next allocation of that size takes it:
/// on a stream the same, cache-warm block serves every record. rustls in-memory bulk 1.41-1.44x
/// -> 1.46-1.51x (three alternating A/B pairs of `benchmarks/ab_core.py bulk_memory rustls`,
/// 2026-12-02). It holds at most one block for the process, and never more than it freed.
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// Largest block that `realloc` keeps in place (a full record's buffer after `Vec` doubling; the
/// 64 KiB buffers of large handshake messages still shrink).
const KEEP_IN_PLACE: usize = 32 * 1024;

struct Allocator;

thread_local! {
    /// Set by `keep_in_place` (const-initialised: reading it never allocates).
    static KEEP: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with the allocator keeping blocks in place on `realloc` (see `ALLOCATOR`).
pub(crate) fn keep_in_place<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            KEEP.with(|k| k.set(self.0));
        }
    }
    let _reset = Reset(KEEP.with(|k| k.replace(true)));
    f()
}

/// The spare record buffer (see `ALLOCATOR`): one freed block of a record's size, process-wide,
/// handed to the next allocation of that size (null: none kept).
static SPARE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// Sizes the spare serves: a TLS record's plaintext (16 KiB) up to a sealed record with its
/// header, tag and padding. mimalloc aligns blocks of these sizes to 16 bytes at least.
const SPARE_SIZES: std::ops::RangeInclusive<usize> = 16 * 1024..=17 * 1024;

#[inline]
fn is_spare_size(layout: std::alloc::Layout) -> bool {
    SPARE_SIZES.contains(&layout.size()) && layout.align() <= 16
}

extern "C" {
    // mimalloc's (linked through the mimalloc crate): the size of the block behind `p`.
    fn mi_usable_size(p: *const std::ffi::c_void) -> usize;
}

// SAFETY: every call goes to mimalloc, whose `mi_free` ignores the layout; a block kept by
// `realloc` is at least `new_size` bytes and keeps the alignment it was allocated with.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if is_spare_size(layout) {
            let spare = SPARE.swap(std::ptr::null_mut(), Ordering::Acquire);
            if !spare.is_null() {
                if mi_usable_size(spare as *const std::ffi::c_void) >= layout.size() {
                    return spare;
                }
                mimalloc::MiMalloc.dealloc(spare, layout); // mi_free: the layout is unused
            }
        }
        mimalloc::MiMalloc.alloc(layout)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        mimalloc::MiMalloc.alloc_zeroed(layout)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if is_spare_size(layout)
            && SPARE
                .compare_exchange(
                    std::ptr::null_mut(),
                    ptr,
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return;
        }
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size <= KEEP_IN_PLACE && KEEP.with(Cell::get) {
            let usable = mi_usable_size(ptr as *const std::ffi::c_void);
            if new_size <= usable && usable <= KEEP_IN_PLACE {
                return ptr;
            }
        }
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
}

mod buffers;
mod config;
mod conn;
mod errors;
mod keyinfo;
mod keylog;
mod lockedcall;
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
    if let Err(message) = sockio::spin_setting() {
        let category = m.py().get_type::<pyo3::exceptions::PyRuntimeWarning>();
        PyErr::warn(m.py(), &category, &std::ffi::CString::new(message)?, 1)?;
    }
    m.add_class::<config::ClientConfig>()?;
    m.add_class::<config::ServerConfig>()?;
    m.add_class::<conn::Connection>()?;
    m.add_class::<resumption::ClientSession>()?;
    m.add_class::<sockio::SocketCore>()?;
    m.add_class::<sockio::SSLSocketCore>()?;
    m.add_class::<sockio::SpinWait>()?;
    m.add_class::<lockedcall::LockedCall>()?;
    m.add_class::<lockedcall::LockState>()?;
    m.add_function(wrap_pyfunction!(config::supported_cipher_suites, m)?)?;
    m.add_function(wrap_pyfunction!(config::supported_groups, m)?)?;
    m.add_class::<nss::NssClientConfig>()?;
    m.add_class::<nss::NssServerConfig>()?;
    m.add_function(wrap_pyfunction!(nss::nss_status, m)?)?;
    m.add_function(wrap_pyfunction!(nss::nss_supported_cipher_suites, m)?)?;
    m.add_function(wrap_pyfunction!(nss::nss_supported_groups, m)?)?;
    m.add("RUSTLS_VERSION", RUSTLS_VERSION)?;
    Ok(())
}
