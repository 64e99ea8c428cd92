//! The fast path of the `ssl` bridge's `LockedTLS` on the OpenSSL engine
//! (`unitls/compat/_native.py`, where its theory of operation is): `read` and `write` of an
//! `ssl.SSLSocket` whose C `_ssl` object must see one thread at a time.
//!
//! In single mode a call is one uncontended lock around one call of the C object's method, when
//! the user's timeout still matches the borrowed socket's; everything else (shared mode, a
//! timeout that changed, a wait, a retry) is `LockedTLS._enter`/`_call`, the one place of the
//! rules. It is native because ssl.py calls it for every read and write: the same steps in a
//! Python closure cost 4-6% of an http.client bulk download.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::lock_api::RawMutex as _;
use parking_lot::RawMutex;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::sockio::{SSLWantReadError, SSLWantWriteError};

/// The lock and mode of one `LockedTLS`: `acquire`/`release` (and `with`) like a
/// `threading.Lock`, waiting with the GIL released; `shared` and `timeout` (the borrowed
/// socket's) read by `LockedCall` without Python calls.
#[pyclass(frozen, module = "unitls._native")]
pub struct LockState {
    raw: RawMutex,
    shared: AtomicBool,
    timeout: AtomicU64,
}

#[pymethods]
impl LockState {
    #[new]
    fn new() -> Self {
        LockState {
            raw: RawMutex::INIT,
            shared: AtomicBool::new(false),
            timeout: AtomicU64::new(0f64.to_bits()),
        }
    }

    #[pyo3(signature = (blocking = true))]
    fn acquire(&self, py: Python<'_>, blocking: bool) -> bool {
        if self.raw.try_lock() {
            return true;
        }
        if !blocking {
            return false;
        }
        py.detach(|| self.raw.lock());
        true
    }

    fn release(&self) -> PyResult<()> {
        if !self.raw.is_locked() {
            return Err(PyRuntimeError::new_err("release unlocked lock"));
        }
        // SAFETY: locked (checked above) by this thread: LockedTLS pairs every acquire with a
        // release in the same thread.
        unsafe { self.raw.unlock() };
        Ok(())
    }

    fn __enter__(&self, py: Python<'_>) -> bool {
        self.acquire(py, true)
    }

    fn __exit__(
        &self,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.release()
    }

    /// Shared mode (set for good by the first thread that finds the lock held).
    #[getter]
    fn get_shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    #[setter]
    fn set_shared(&self, value: bool) {
        self.shared.store(value, Ordering::Relaxed)
    }

    /// The borrowed socket's timeout, as last set.
    #[getter]
    fn get_timeout(&self) -> f64 {
        f64::from_bits(self.timeout.load(Ordering::Relaxed))
    }

    #[setter]
    fn set_timeout(&self, value: f64) {
        self.timeout.store(value.to_bits(), Ordering::Relaxed)
    }
}

/// `read` or `write` of one `LockedTLS` (see the module docstring). Holds the `LockedTLS` and
/// the `SSLSocket` weakly: the `LockedTLS` holds this object.
#[pyclass(frozen, module = "unitls._native")]
pub struct LockedCall {
    name: Py<PyString>,
    method: Py<PyAny>,
    lock: Py<LockState>,
    user: Py<PyAny>,
    tls: Py<PyAny>,
    slice: f64,
}

#[pymethods]
impl LockedCall {
    /// `name` and `method`: the C object's; `lock`: the `LockedTLS`'s; `user` and `tls`: weak
    /// references to the `SSLSocket` and the `LockedTLS`; `slice`: `_SLICE`.
    #[new]
    fn new(
        name: Py<PyString>,
        method: Py<PyAny>,
        lock: Py<LockState>,
        user: Py<PyAny>,
        tls: Py<PyAny>,
        slice: f64,
    ) -> Self {
        LockedCall {
            name,
            method,
            lock,
            user,
            tls,
            slice,
        }
    }

    #[pyo3(signature = (*args))]
    fn __call__(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let lock = self.lock.get();
        let mut failed: Option<PyErr> = None;
        if !lock.shared.load(Ordering::Relaxed) && lock.raw.try_lock() {
            let result = self.single(py, lock, args);
            // SAFETY: locked by the try_lock above, in this call.
            unsafe { lock.raw.unlock() };
            match result {
                Err(e)
                    if e.is_instance_of::<SSLWantReadError>(py)
                        || e.is_instance_of::<SSLWantWriteError>(py)
                        || e.is_instance_of::<PyTimeoutError>(py) =>
                {
                    failed = Some(e)
                }
                done => return done,
            }
        }
        let failed = failed.map(|e| e.into_value(py).into_any());
        self.locked_tls(py)?
            .call_method1(
                intern!(py, "_call"),
                (self.name.bind(py), self.method.bind(py), args, failed),
            )
            .map(Bound::unbind)
    }
}

impl LockedCall {
    /// Under the lock in single mode: `_enter()` unless the timeout is unchanged, then the call.
    fn single(
        &self,
        py: Python<'_>,
        lock: &LockState,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        if !self.timeout_unchanged(py, lock)? {
            self.locked_tls(py)?.call_method0(intern!(py, "_enter"))?;
        }
        self.method.bind(py).call1(args).map(Bound::unbind)
    }

    /// The user's socket is there, its timeout is not None (whose descriptor needs the check
    /// in `_enter`) and gives the borrowed socket's timeout. (Whether it was closed is
    /// `_enter`'s check: a close by another thread during a call is the stdlib's race too.)
    fn timeout_unchanged(&self, py: Python<'_>, lock: &LockState) -> PyResult<bool> {
        let user = self.user.bind(py).call0()?;
        if user.is_none() {
            return Ok(false);
        }
        let timeout: Option<f64> = user.call_method0(intern!(py, "gettimeout"))?.extract()?;
        let Some(timeout) = timeout else {
            return Ok(false);
        };
        let wanted = if timeout < self.slice {
            timeout
        } else {
            self.slice
        };
        Ok(wanted.to_bits() == lock.timeout.load(Ordering::Relaxed))
    }

    fn locked_tls<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let tls = self.tls.bind(py).call0()?;
        if tls.is_none() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "the SSL socket's TLS layer is gone",
            ));
        }
        Ok(tls)
    }
}
