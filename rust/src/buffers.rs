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
