//! Buffer-protocol access to any Python object that exports a C-contiguous buffer.
//!
//! PyO3's `PyBuffer<u8>` insists on an unsigned-byte format, so `array('b')`, `array('I')` or a
//! ctypes array are refused, although the stdlib's sockets take them all (as raw bytes). These
//! wrappers ask for `PyBUF_SIMPLE` (plain bytes, any exporter) and release the view on drop.

use std::os::raw::c_int;

use pyo3::ffi;
use pyo3::prelude::*;

/// A read-only view of the bytes of a buffer-protocol object, held for the view's lifetime.
pub struct ByteView {
    view: ffi::Py_buffer,
}

// SAFETY: the view only records a pointer and a length into memory that the exporter keeps
// alive and unresized while the view is held; reading it from another thread is the same race
// any C extension releasing the GIL on a buffer has (the caller's responsibility, as for
// `socket.send`).
unsafe impl Send for ByteView {}
unsafe impl Sync for ByteView {}

impl ByteView {
    fn get(obj: &Bound<'_, PyAny>, flags: c_int) -> PyResult<Self> {
        let mut view = ffi::Py_buffer::new();
        // SAFETY: `view` is a valid, zeroed Py_buffer; on success it is released in Drop.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut view, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(ByteView { view })
    }

    /// Any object exporting a contiguous buffer (bytes, bytearray, memoryview, array, ctypes).
    pub fn readable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::get(obj, ffi::PyBUF_SIMPLE)
    }

    /// A writable contiguous buffer (bytearray, memoryview of one, array, ctypes...).
    pub fn writable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::get(obj, ffi::PyBUF_WRITABLE)
    }

    pub fn len(&self) -> usize {
        self.view.len as usize
    }

    /// Whether the two views share any byte (a slice and a mutable slice of them may not).
    pub fn overlaps(&self, other: &ByteView) -> bool {
        let (a, b) = (self.view.buf as usize, other.view.buf as usize);
        self.len() > 0 && other.len() > 0 && a < b + other.len() && b < a + self.len()
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: PyBUF_SIMPLE guarantees `len` contiguous bytes at `buf` while the view is held.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.len()) }
    }

    /// The bytes as a mutable slice (only for views taken with `writable`).
    #[allow(clippy::mut_from_ref)]
    pub fn as_mut_slice(&self) -> &mut [u8] {
        if self.view.len == 0 || self.view.buf.is_null() {
            return &mut [];
        }
        debug_assert!(self.view.readonly == 0);
        // SAFETY: a writable contiguous view; the exporter allows writes while it is held.
        unsafe { std::slice::from_raw_parts_mut(self.view.buf as *mut u8, self.len()) }
    }
}

impl Drop for ByteView {
    fn drop(&mut self) {
        // Releasing touches the exporter's refcount: it needs the GIL.
        Python::attach(|_| unsafe { ffi::PyBuffer_Release(&mut self.view) });
    }
}

/// A writer into memory that is not initialised yet (a new `bytes` object's): it never forms a
/// Rust slice over that memory, only copies into it, and counts what it wrote.
pub struct RawSink {
    ptr: *mut u8,
    len: usize,
    pos: usize,
}

impl std::io::Write for RawSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(self.len - self.pos);
        // SAFETY: `ptr..ptr+len` is writable memory owned by the caller of `new_bytes_filled`
        // for the sink's lifetime; `pos + n <= len`; `data` cannot overlap a new object.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(self.pos), n) };
        self.pos += n;
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let mut total = 0;
        for buf in bufs {
            let n = self.write(buf)?;
            total += n;
            if n < buf.len() {
                break;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A new `bytes` object of exactly `len` bytes, filled by `fill` through a `RawSink` without
/// zeroing it first (PyO3's `PyBytes::new_with` zeroes: a memset per call on the hot path).
/// `fill` must write all `len` bytes; otherwise this fails with `short` (the object is dropped
/// before anyone sees its uninitialised tail).
pub fn new_bytes_filled<'py, E>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut RawSink) -> Result<(), E>,
    short: impl FnOnce(usize) -> E,
) -> Result<Bound<'py, pyo3::types::PyBytes>, E>
where
    E: From<PyErr>,
{
    use pyo3::types::PyBytes;
    // SAFETY: a NULL source asks CPython for an uninitialised object of `len` bytes, which
    // only this function can reach until it returns it.
    let obj = unsafe {
        let raw = ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as ffi::Py_ssize_t);
        Bound::from_owned_ptr_or_err(py, raw)?.cast_into_unchecked::<PyBytes>()
    };
    // SAFETY: the object's buffer holds `len` writable bytes (plus CPython's trailing NUL).
    let ptr = unsafe { ffi::PyBytes_AsString(obj.as_ptr()) } as *mut u8;
    if ptr.is_null() {
        return Err(PyErr::fetch(py).into());
    }
    let mut sink = RawSink { ptr, len, pos: 0 };
    fill(&mut sink)?;
    if sink.pos != len {
        return Err(short(sink.pos));
    }
    Ok(obj)
}
