//! `Connection`: one TLS connection of any Rust engine, driven sans-I/O from Python.
//!
//! Written once over `TlsSession`; engines only provide the session. Decisions:
//! - Thread safety: the object is frozen and keeps its state behind a mutex. A thread waits for
//!   the mutex with the GIL released, so one thread may read while another writes (the
//!   websockets sync client does) without "Already borrowed" errors or deadlocks. Work that
//!   takes time (crypto) also runs with the GIL released.
//! - Panic boundary: every call runs under `catch_unwind`. A panic becomes a `TLSError`
//!   ("internal error in the ... engine") and the connection is failed for good, never a
//!   `PanicException` (a `BaseException` that `except Exception` misses).
//! - Fatal errors are sticky: raised again by every later call, while `process_outgoing` still
//!   hands out the alert the engine queued for the peer.
//! - Buffers: any object exporting a contiguous buffer is taken as bytes (as `socket.send` does).

use std::panic::{catch_unwind, AssertUnwindSafe};

use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buffers::ByteView;
use crate::errors::Failure;
use crate::rustls_session::ByteQueue;
use crate::session::TlsSession;

/// Above this many queued ciphertext bytes, `process_incoming` refuses more.
const MAX_QUEUED_INCOMING: usize = 1 << 20;
/// Record work (encrypting, decrypting, copying) on at most this many bytes runs with the GIL
/// held once the handshake is over: at most ~20 us here (AES-GCM ~6 GB/s), and releasing and
/// retaking the GIL around every 16 KiB record cost the in-memory bulk loop 2-4% (rustls
/// 1.50-1.52x the stdlib with it, 1.55-1.56x without: three alternating A/B pairs of
/// `benchmarks/ab_core.py bulk_memory rustls`, 2026-12-02). Handshakes (public-key crypto,
/// hundreds of us) and larger amounts release it, so other threads run meanwhile.
const HOLD_GIL_MAX: usize = 64 * 1024;

pub(crate) struct Inner {
    pub(crate) session: Box<dyn TlsSession>,
    /// Ciphertext taken from the session and not yet handed out.
    pub(crate) outgoing: ByteQueue,
    /// The first fatal failure.
    pub(crate) error: Option<Failure>,
    /// The transport reported EOF.
    pub(crate) eof: bool,
}

impl Inner {
    /// Before feeding `data`: `Ok(false)` when it is the EOF (delivered here, once), the
    /// usage and queue-limit failures of `process_incoming` as `Err`.
    fn may_feed(&mut self, data: &[u8]) -> Result<bool, Failure> {
        if data.is_empty() {
            if !self.eof {
                self.eof = true;
                self.session.feed_eof()?;
            }
            return Ok(false);
        }
        if self.eof {
            return Err(Failure::Usage(
                "data received after the transport reported EOF".into(),
            ));
        }
        if self.session.incoming_len() > MAX_QUEUED_INCOMING {
            return Err(Failure::WantRead(
                "more than 1 MiB of ciphertext is queued: read the plaintext first",
            ));
        }
        Ok(true)
    }

    fn check(&self) -> Result<(), Failure> {
        match &self.error {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }

    /// Record a fatal failure (the first one wins).
    fn note<T>(&mut self, result: Result<T, Failure>) -> Result<T, Failure> {
        if let Err(f) = &result {
            if f.is_fatal() && self.error.is_none() {
                self.error = Some(f.clone());
            }
        }
        result
    }

    fn outgoing_len(&mut self) -> usize {
        if self.outgoing.is_empty() {
            if let Some(n) = self.session.pending_outgoing() {
                return n;
            }
        }
        self.session.drain_outgoing(&mut self.outgoing.buf);
        self.outgoing.len()
    }
}

/// One TLS connection (client or server side) of a Rust engine.
#[pyclass(frozen, module = "unitls._native")]
pub struct Connection {
    engine: &'static str,
    inner: Mutex<Inner>,
    /// Client side: the engine's opaque object for the sessions this connection receives.
    client_session: Option<Py<PyAny>>,
}

impl Connection {
    /// `read` without a buffer: up to `amt` bytes of plaintext as `bytes`.
    fn read_bytes<'py>(&self, py: Python<'py>, amt: isize) -> PyResult<Bound<'py, PyBytes>> {
        if amt < 0 {
            return Err(PyValueError::new_err("amt must not be negative"));
        }
        let amt = amt as usize;
        if amt == 0 {
            self.run(py, true, |_| Ok(()))?;
            return Ok(PyBytes::new(py, b""));
        }
        let mut guard = self.lock(py);
        guard.check()?;
        let inner = &mut *guard;
        let (avail, queued) = self.call(py, inner, true, |inner| {
            Ok((inner.session.plaintext_len(), inner.session.incoming_len()))
        })?;
        if avail >= amt || (avail > 0 && queued == 0) {
            // Decrypted already: copy straight into the result.
            let n = avail.min(amt);
            let mut got = 0;
            let out = PyBytes::new_with(py, n, |buf| {
                got = self.call(py, inner, true, |inner| {
                    crate::keep_in_place(|| inner.session.read(buf))
                })?;
                Ok(())
            })?;
            if got == n {
                return Ok(out);
            }
            return Ok(PyBytes::new(py, &out.as_bytes()[..got]));
        }
        // More records are queued than are decrypted: gather them in one call (plaintext is
        // never longer than the ciphertext it came from).
        let cap = if avail == 0 && queued == 0 {
            1 // only a failure or the clean EOF can come
        } else {
            amt.min(avail + queued + 64 * 1024)
        };
        let mut gathered = vec![0u8; cap];
        let got = self.call(py, inner, true, |inner| {
            crate::keep_in_place(|| inner.session.read(&mut gathered))
        })?;
        Ok(PyBytes::new(py, &gathered[..got]))
    }

    pub fn new(engine: &'static str, session: Box<dyn TlsSession>) -> Self {
        Connection {
            engine,
            inner: Mutex::new(Inner {
                session,
                outgoing: ByteQueue::default(),
                error: None,
                eof: false,
            }),
            client_session: None,
        }
    }

    /// Attach the object `client_session()` returns (see there).
    pub fn with_client_session(mut self, session: Py<PyAny>) -> Self {
        self.client_session = Some(session);
        self
    }

    /// The state, waiting for it with the GIL released (never block on the mutex while holding
    /// the GIL: the holder may need the GIL to finish).
    fn lock<'a>(&'a self, py: Python<'_>) -> MutexGuard<'a, Inner> {
        if let Some(guard) = self.inner.try_lock() {
            return guard;
        }
        py.detach(|| self.inner.lock())
    }

    /// Run `op` on the state under the panic boundary, for callers that do not hold the GIL
    /// (the native socket path, `sockio.rs`): waits for the mutex, raises the sticky error
    /// first if `check`, records a fatal failure.
    pub(crate) fn with_engine<T>(
        &self,
        check: bool,
        op: impl FnOnce(&mut Inner) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut guard = self.inner.lock();
        if check {
            guard.check()?;
        }
        let inner = &mut *guard;
        let outcome = catch_unwind(AssertUnwindSafe(|| op(&mut *inner)));
        let result = self.contain(inner, outcome)?;
        inner.note(result)
    }

    /// What `catch_unwind` returned around an engine call: a panic becomes the connection's
    /// sticky `Failure::Internal` (the panic boundary's one rule, for every way in).
    fn contain<R>(&self, inner: &mut Inner, outcome: std::thread::Result<R>) -> Result<R, Failure> {
        outcome.map_err(|payload| {
            let failure = self.internal(payload);
            inner.error = Some(failure.clone());
            failure
        })
    }

    fn internal(&self, payload: Box<dyn std::any::Any + Send>) -> Failure {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        Failure::Internal(format!(
            "internal error in the {} engine ({what}); the connection cannot be used any more",
            self.engine
        ))
    }

    /// Run `op` on the state under the panic boundary, with the GIL released.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        check: bool,
        op: impl FnOnce(&mut Inner) -> Result<T, Failure> + Send,
    ) -> PyResult<T> {
        let mut guard = self.lock(py);
        if check {
            guard.check()?;
        }
        self.call(py, &mut guard, true, op)
    }

    /// Like `run`, for record work on `bytes` bytes (plus what the engine has queued): with the
    /// GIL held when that is small and the handshake is over (see `HOLD_GIL_MAX`).
    fn run_records<T: Send>(
        &self,
        py: Python<'_>,
        bytes: usize,
        op: impl FnOnce(&mut Inner) -> Result<T, Failure> + Send,
    ) -> PyResult<T> {
        let mut guard = self.lock(py);
        guard.check()?;
        let small = bytes.saturating_add(guard.session.incoming_len()) <= HOLD_GIL_MAX
            && !guard.session.is_handshaking();
        self.call(py, &mut guard, !small, op)
    }

    /// `op` under the panic boundary on state already locked, with the GIL released if
    /// `detach`.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        inner: &mut Inner,
        detach: bool,
        op: impl FnOnce(&mut Inner) -> Result<T, Failure> + Send,
    ) -> PyResult<T> {
        let attempt = || catch_unwind(AssertUnwindSafe(|| op(&mut *inner)));
        let outcome = if detach {
            py.detach(attempt)
        } else {
            attempt()
        };
        let result = self.contain(inner, outcome)?;
        Ok(inner.note(result)?)
    }

    /// Like `run`, but with the GIL held (for work that builds Python objects).
    fn run_gil<'py, T>(
        &self,
        py: Python<'py>,
        op: impl FnOnce(&mut Inner) -> PyResult<T>,
    ) -> PyResult<T> {
        let mut guard = self.lock(py);
        let inner = &mut *guard;
        let outcome = catch_unwind(AssertUnwindSafe(|| op(&mut *inner)));
        self.contain(inner, outcome)?
    }
}

#[pymethods]
impl Connection {
    /// Give ciphertext received from the peer; an empty buffer means the transport's EOF.
    fn process_incoming(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let view = ByteView::readable(data)?;
        self.run_records(py, view.len(), |inner| {
            if !inner.may_feed(view.as_slice())? {
                return Ok(());
            }
            // rustls' receive buffer shrinks and grows around every record (`keep_in_place`).
            crate::keep_in_place(|| inner.session.feed(view.as_slice()))
        })
    }

    /// `process_incoming(data)`, then `read_into(buffer)` as far as plaintext is ready, in one
    /// call that never raises for the reading part: returns the bytes read (0: none yet, or
    /// the end of the stream; the next `read` says which, and raises what stopped it). Only
    /// `process_incoming`'s exceptions come out of it (`WantReadError`: nothing was taken).
    /// rustls decrypts `data`'s records into `buffer` as it takes them, where separate calls
    /// queue the ciphertext it cannot take while it holds 16 KiB of plaintext (one copy less).
    fn process_incoming_into(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        buffer: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let view = ByteView::readable(data)?;
        let out = ByteView::writable(buffer)?;
        // Plaintext may not be written over ciphertext still being read: a buffer sharing
        // memory with the ciphertext gets a copy of the ciphertext first (what the OpenSSL
        // engine does with every chunk), so the call means the same on every engine.
        let copied: Option<Vec<u8>> = view.overlaps(&out).then(|| view.as_slice().to_vec());
        self.run_records(py, view.len(), move |inner| {
            let data = copied.as_deref().unwrap_or_else(|| view.as_slice());
            if !inner.may_feed(data)? {
                return Ok(0);
            }
            if out.len() == 0 {
                return crate::keep_in_place(|| inner.session.feed(data)).map(|_| 0);
            }
            crate::keep_in_place(|| inner.session.feed_read(data, out.as_mut_slice()))
        })
    }

    /// Ciphertext bytes queued and not yet consumed by the engine.
    fn incoming_bytes_buffered(&self, py: Python<'_>) -> PyResult<usize> {
        self.run_gil(py, |inner| Ok(inner.session.incoming_len()))
    }

    /// Up to `amt` bytes (amt < 0: all) of ciphertext to send to the peer.
    fn process_outgoing<'py>(&self, py: Python<'py>, amt: isize) -> PyResult<Bound<'py, PyBytes>> {
        let want = if amt < 0 { usize::MAX } else { amt as usize };
        self.run_gil(py, |inner| {
            if inner.outgoing.is_empty() {
                if let Some(pending) = inner.session.pending_outgoing() {
                    // Common case: copy the engine's records straight into the result.
                    let n = pending.min(want);
                    return crate::buffers::new_bytes_filled(
                        py,
                        n,
                        |sink| {
                            inner.session.take_outgoing(sink);
                            Ok(())
                        },
                        |got| {
                            PyErr::from(Failure::Internal(format!(
                                "internal error in the {} engine: it gave {got} bytes of \
                                 ciphertext, not the {n} it reported",
                                self.engine
                            )))
                        },
                    );
                }
            }
            inner.session.drain_outgoing(&mut inner.outgoing.buf);
            let n = inner.outgoing.len().min(want);
            let out = PyBytes::new(py, &inner.outgoing.data()[..n]);
            inner.outgoing.consume(n);
            Ok(out)
        })
    }

    /// Ciphertext bytes waiting to be sent.
    fn outgoing_bytes_buffered(&self, py: Python<'_>) -> PyResult<usize> {
        self.run_gil(py, |inner| Ok(inner.outgoing_len()))
    }

    /// Drive the handshake: returns once complete, else raises WantReadError.
    fn do_handshake(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, true, |inner| match inner.session.handshake() {
            // An engine may keep waiting after the peer's close_notify (OpenSSL stops at
            // once): the same event gets the same class on every engine.
            Err(Failure::WantRead(_)) if inner.session.close_notify_received() => {
                Err(Failure::HandshakeClosed(
                    "the peer sent close_notify during the TLS handshake".into(),
                ))
            }
            other => other,
        })
    }

    /// Plaintext, up to `amt` bytes (b"" after the peer's close_notify); into `buffer` when
    /// given (then returns the count, see `read_into`): the PEP's `TLSBuffer.read` in one call.
    #[pyo3(signature = (amt, buffer=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        amt: isize,
        buffer: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(buffer) = buffer {
            return Ok(self
                .read_into(py, buffer, amt)?
                .into_pyobject(py)?
                .into_any());
        }
        Ok(self.read_bytes(py, amt)?.into_any())
    }

    /// Plaintext into a writable buffer, up to `amt` bytes (amt <= 0: len(buffer)).
    #[pyo3(signature = (buffer, amt=-1))]
    fn read_into(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>, amt: isize) -> PyResult<usize> {
        let view = ByteView::writable(buffer)?;
        let want = if amt <= 0 {
            view.len()
        } else {
            view.len().min(amt as usize)
        };
        self.run_records(py, want, move |inner| {
            if want == 0 {
                return Ok(0);
            }
            crate::keep_in_place(|| inner.session.read(&mut view.as_mut_slice()[..want]))
        })
    }

    /// Encrypt plaintext; takes all of it once the handshake is complete.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let view = ByteView::readable(data)?;
        self.run_records(py, view.len(), move |inner| {
            inner.session.write(view.as_slice())
        })
    }

    /// Queue a close_notify alert for the peer (idempotent).
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, false, |inner| {
            if inner.error.is_none() {
                inner.session.shutdown();
            }
            Ok(())
        })
    }

    /// Decrypted bytes ready to be read without more input.
    fn pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.run(py, false, |inner| {
            Ok(if inner.error.is_some() {
                0
            } else {
                inner.session.plaintext_len()
            })
        })
    }

    fn handshake_complete(&self, py: Python<'_>) -> PyResult<bool> {
        self.run_gil(py, |inner| Ok(!inner.session.is_handshaking()))
    }

    /// The peer's leaf certificate (DER), if any.
    fn peer_certificate<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.run_gil(py, |inner| {
            Ok(inner
                .session
                .peer_certificates()
                .first()
                .map(|c| PyBytes::new(py, c)))
        })
    }

    /// The peer's certificate chain (DER, leaf first) as it sent it.
    fn peer_chain<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        self.run_gil(py, |inner| {
            Ok(inner
                .session
                .peer_certificates()
                .iter()
                .map(|c| PyBytes::new(py, c))
                .collect())
        })
    }

    /// IANA id of the negotiated cipher suite (None before the handshake completes).
    fn cipher_suite(&self, py: Python<'_>) -> PyResult<Option<u16>> {
        self.run_gil(py, |inner| Ok(inner.session.cipher_suite()))
    }

    fn alpn_protocol<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.run_gil(py, |inner| {
            Ok(inner.session.alpn_protocol().map(|p| PyBytes::new(py, &p)))
        })
    }

    /// 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3); None before the handshake completes.
    fn protocol_version(&self, py: Python<'_>) -> PyResult<Option<u16>> {
        self.run_gil(py, |inner| Ok(inner.session.protocol_version()))
    }

    /// Server side: the SNI name the client sent.
    fn server_name(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.run_gil(py, |inner| Ok(inner.session.server_name()))
    }

    fn close_notify_received(&self, py: Python<'_>) -> PyResult<bool> {
        self.run_gil(py, |inner| Ok(inner.session.close_notify_received()))
    }

    /// Whether the handshake resumed an earlier session (False before it completes).
    fn session_resumed(&self, py: Python<'_>) -> PyResult<bool> {
        self.run_gil(py, |inner| Ok(inner.session.session_resumed()))
    }

    /// Client side: the engine's opaque session object, holding what the server sent for
    /// resuming later (TLS 1.3 tickets arrive after the handshake); None on servers.
    fn client_session(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.client_session.as_ref().map(|s| s.clone_ref(py))
    }

    /// The key exchange group's IANA codepoint (None before the handshake completes).
    fn negotiated_group_id(&self, py: Python<'_>) -> PyResult<Option<u16>> {
        self.run_gil(py, |inner| Ok(inner.session.negotiated_group()))
    }

    /// The engine's name ("rustls", ...).
    #[getter]
    fn engine(&self) -> &'static str {
        self.engine
    }

    /// Test hook: panic inside the engine boundary (proves the boundary works).
    fn _panic_for_test(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, false, |_| -> Result<(), Failure> {
            panic!("deliberate panic requested by a test")
        })
    }
}
