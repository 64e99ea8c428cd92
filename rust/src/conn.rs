//! `Connection`: one TLS connection, driven in memory (sans-I/O) from Python.

use std::io::{ErrorKind, Read};

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{map_rustls_error, Failure};

/// Above this many queued ciphertext bytes, `process_incoming` refuses more.
const MAX_QUEUED_INCOMING: usize = 1 << 20;

/// A byte queue with a read cursor; compacted lazily.
#[derive(Default)]
struct ByteQueue {
    buf: Vec<u8>,
    pos: usize,
}

impl ByteQueue {
    fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    fn extend(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }
}

/// Everything that runs without the GIL.
struct Core {
    conn: rustls::Connection,
    incoming: ByteQueue,
    outgoing: ByteQueue,
    /// The transport reported EOF (`process_incoming(b"")`).
    eof: bool,
    /// EOF was passed on to rustls (only once the queue is drained).
    eof_fed: bool,
    close_notify_received: bool,
    shut_down: bool,
    /// A fatal error: raised again by every later call.
    error: Option<Failure>,
}

impl Core {
    fn fail(&mut self, err: &rustls::Error) -> Failure {
        let f = map_rustls_error(err, self.conn.is_handshaking());
        // rustls queued an alert for the peer: make it available to process_outgoing.
        self.drain_tls();
        self.error = Some(f.clone());
        f
    }

    fn process(&mut self) -> Result<rustls::IoState, Failure> {
        match self.conn.process_new_packets() {
            Ok(st) => {
                if st.peer_has_closed() {
                    self.close_notify_received = true;
                }
                Ok(st)
            }
            Err(e) => Err(self.fail(&e)),
        }
    }

    /// Feed queued ciphertext, then `fresh`, to rustls as far as it takes it; queue the rest.
    fn pump(&mut self, fresh: &[u8]) -> Result<(), Failure> {
        let mut fresh = fresh;
        let mut fed_any = false;
        loop {
            let from_queue = !self.incoming.is_empty();
            let src: &[u8] = if from_queue {
                self.incoming.data()
            } else {
                fresh
            };
            if src.is_empty() {
                break;
            }
            let mut reader = src;
            match self.conn.read_tls(&mut reader) {
                Ok(0) => {
                    // rustls saw close_notify: whatever follows is not for us.
                    self.incoming.clear();
                    fresh = &[];
                    break;
                }
                Ok(n) => {
                    fed_any = true;
                    if from_queue {
                        self.incoming.consume(n);
                    } else {
                        fresh = &fresh[n..];
                    }
                }
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    let f = Failure::Protocol(format!("TLS protocol error: {e}"));
                    self.drain_tls();
                    self.error = Some(f.clone());
                    return Err(f);
                }
                // "received plaintext buffer full": wait for the application to read.
                Err(_) => break,
            }
            self.process()?;
            if self.close_notify_received {
                self.incoming.clear();
                fresh = &[];
                break;
            }
        }
        if !fresh.is_empty() {
            self.incoming.extend(fresh);
        }
        if self.eof && !self.eof_fed && self.incoming.is_empty() {
            self.eof_fed = true;
            let mut empty: &[u8] = &[];
            let _ = self.conn.read_tls(&mut empty);
            fed_any = true;
        }
        if fed_any {
            self.process()?;
        }
        Ok(())
    }

    fn drain_tls(&mut self) {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.outgoing.buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Ciphertext rustls holds for the peer, when it can tell (not after a fatal error).
    fn rustls_pending(&mut self) -> Option<usize> {
        if self.error.is_some() {
            return None;
        }
        match self.process() {
            Ok(st) => Some(st.tls_bytes_to_write()),
            Err(_) => None,
        }
    }

    fn check(&self) -> Result<(), Failure> {
        match &self.error {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }

    fn handshake_blocked(&self) -> Failure {
        if self.eof || self.close_notify_received {
            Failure::HandshakeClosed(
                "the peer closed the connection before the TLS handshake completed".into(),
            )
        } else {
            Failure::WantRead("the TLS handshake needs more data from the peer")
        }
    }

    /// Drive the handshake; Ok(()) once complete.
    fn handshake(&mut self) -> Result<(), Failure> {
        self.check()?;
        if !self.conn.is_handshaking() {
            return Ok(());
        }
        self.pump(&[])?;
        self.drain_tls();
        if self.conn.is_handshaking() {
            return Err(self.handshake_blocked());
        }
        Ok(())
    }

    /// Plaintext bytes ready to read, after feeding what is queued.
    fn readable(&mut self) -> Result<usize, Failure> {
        self.check()?;
        self.pump(&[])?;
        let st = self.process()?;
        let n = st.plaintext_bytes_to_read();
        if n == 0 && self.conn.is_handshaking() {
            self.drain_tls();
        }
        Ok(n)
    }

    /// Why nothing could be read: `Ok(())` means clean EOF (return b"").
    fn nothing_to_read(&self) -> Result<(), Failure> {
        if self.close_notify_received && !self.conn.is_handshaking() {
            return Ok(());
        }
        if self.conn.is_handshaking() {
            return Err(self.handshake_blocked());
        }
        if self.eof_fed {
            return Err(Failure::Ragged(
                "EOF occurred in violation of protocol: the peer closed the transport without \
                 a TLS close_notify",
            ));
        }
        Err(Failure::WantRead("no application data available yet"))
    }

    /// Fill `target` with as much plaintext as the queued ciphertext yields, record after
    /// record. A failure after some bytes were read stops the loop (it is stored and raised by
    /// the next call), so no decrypted data is lost.
    fn read_available(&mut self, target: &mut [u8]) -> Result<usize, Failure> {
        let mut got = 0;
        while got < target.len() {
            let avail = match self.readable() {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if got == 0 => return Err(e),
                Err(_) => break,
            };
            let n = avail.min(target.len() - got);
            match self.read_plain(&mut target[got..got + n]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if got == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(got)
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        match self.conn.reader().read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(Failure::Ragged(
                "EOF occurred in violation of protocol: the peer closed the transport without \
                 a TLS close_notify",
            )),
            Err(e) => Err(Failure::Generic(format!("reading plaintext failed: {e}"))),
        }
    }
}

/// One TLS connection (client or server side).
#[pyclass(module = "unitls._rustls")]
pub struct Connection {
    core: Core,
}

impl Connection {
    pub fn new(mut conn: rustls::Connection) -> Self {
        // write() takes all the data it is given: no limit on buffered records.
        conn.set_buffer_limit(None);
        Connection {
            core: Core {
                conn,
                incoming: ByteQueue::default(),
                outgoing: ByteQueue::default(),
                eof: false,
                eof_fed: false,
                close_notify_received: false,
                shut_down: false,
                error: None,
            },
        }
    }
}

/// A contiguous read-only view of a buffer-protocol object.
fn buffer_slice(buf: &PyBuffer<u8>) -> PyResult<&[u8]> {
    match buf.as_slice_ptr() {
        // SAFETY: the buffer is held (exported) for the lifetime of `buf`; the exporter keeps
        // the memory alive and unresized. Concurrent mutation by another thread is the
        // caller's race, as with every C extension that releases the GIL on a buffer.
        Some(ptr) => Ok(unsafe { &*ptr.as_ptr() }),
        None => Err(PyBufferError::new_err("the buffer must be C-contiguous")),
    }
}

#[pymethods]
impl Connection {
    /// Give ciphertext received from the peer; b"" means the transport reached EOF.
    fn process_incoming(&mut self, py: Python<'_>, data: PyBuffer<u8>) -> PyResult<()> {
        let core = &mut self.core;
        core.check()?;
        let slice = buffer_slice(&data)?;
        if slice.is_empty() {
            core.eof = true;
        } else if core.incoming.len() > MAX_QUEUED_INCOMING {
            return Err(Failure::WantRead(
                "more than 1 MiB of ciphertext is queued: read the plaintext first",
            )
            .into());
        }
        if core.eof && !slice.is_empty() {
            // Data after EOF: ignore it (the transport said it had ended).
            return Ok(());
        }
        py.detach(|| core.pump(slice))?;
        Ok(())
    }

    /// Ciphertext bytes queued and not yet consumed by rustls.
    fn incoming_bytes_buffered(&self) -> usize {
        self.core.incoming.len()
    }

    /// Up to `amt` bytes (amt < 0: all) of ciphertext to send to the peer.
    fn process_outgoing<'py>(
        &mut self,
        py: Python<'py>,
        amt: isize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let core = &mut self.core;
        let want = if amt < 0 { usize::MAX } else { amt as usize };
        if core.outgoing.is_empty() {
            if let Some(pending) = core.rustls_pending() {
                // Common case: copy rustls' records straight into the result.
                let n = pending.min(want);
                let mut short = false;
                let out = PyBytes::new_with(py, n, |buf| {
                    let mut rest: &mut [u8] = buf;
                    while !rest.is_empty() {
                        match core.conn.write_tls(&mut rest) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    short = !rest.is_empty();
                    Ok(())
                })?;
                if short {
                    return Err(Failure::Generic(
                        "internal error: rustls gave less ciphertext than it reported".into(),
                    )
                    .into());
                }
                return Ok(out);
            }
        }
        core.drain_tls();
        let n = core.outgoing.len().min(want);
        let out = PyBytes::new(py, &core.outgoing.data()[..n]);
        core.outgoing.consume(n);
        Ok(out)
    }

    /// Ciphertext bytes waiting to be sent.
    fn outgoing_bytes_buffered(&mut self) -> usize {
        let core = &mut self.core;
        if core.outgoing.is_empty() {
            if let Some(pending) = core.rustls_pending() {
                return pending;
            }
        }
        core.drain_tls();
        core.outgoing.len()
    }

    /// Drive the handshake: returns once complete, else raises WantReadError.
    fn do_handshake(&mut self, py: Python<'_>) -> PyResult<()> {
        let core = &mut self.core;
        py.detach(|| core.handshake())?;
        Ok(())
    }

    /// Plaintext, up to `amt` bytes.
    fn read<'py>(&mut self, py: Python<'py>, amt: isize) -> PyResult<Bound<'py, PyBytes>> {
        if amt < 0 {
            return Err(PyValueError::new_err("amt must not be negative"));
        }
        let core = &mut self.core;
        let avail = py.detach(|| core.readable())?;
        if avail == 0 {
            core.nothing_to_read()?;
            return Ok(PyBytes::new(py, b""));
        }
        let n = avail.min(amt as usize);
        if n == 0 {
            return Ok(PyBytes::new(py, b""));
        }
        if n < amt as usize && !core.incoming.is_empty() {
            // More records are queued than rustls holds decrypted: gather them in one call
            // (one extra copy, far cheaper than a Python round trip per 16 KiB record).
            // Plaintext is never longer than the ciphertext it came from: size by what is here.
            let cap = (amt as usize).min(avail + core.incoming.len() + 64 * 1024);
            let mut gathered = vec![0u8; cap];
            let got = py.detach(|| core.read_available(&mut gathered))?;
            return Ok(PyBytes::new(py, &gathered[..got]));
        }
        let mut err = None;
        let out = PyBytes::new_with(py, n, |buf| {
            match core.read_plain(buf) {
                Ok(got) if got == buf.len() => {}
                Ok(got) => {
                    err = Some(Failure::Generic(format!(
                        "internal error: expected {} plaintext bytes, got {got}",
                        buf.len()
                    )))
                }
                Err(f) => err = Some(f),
            }
            Ok(())
        })?;
        match err {
            Some(f) => Err(f.into()),
            None => Ok(out),
        }
    }

    /// Plaintext into a writable buffer, up to `amt` bytes (amt <= 0: len(buffer)).
    #[pyo3(signature = (buffer, amt=-1))]
    fn read_into(&mut self, py: Python<'_>, buffer: PyBuffer<u8>, amt: isize) -> PyResult<usize> {
        if buffer.readonly() {
            return Err(PyBufferError::new_err("the buffer is read-only"));
        }
        let ptr = buffer
            .as_slice_ptr()
            .ok_or_else(|| PyBufferError::new_err("the buffer must be C-contiguous"))?;
        // SAFETY: writable, contiguous and held for the duration of this call (see
        // buffer_slice).
        let target: &mut [u8] = unsafe { &mut *ptr.as_ptr() };
        let want = if amt <= 0 {
            target.len()
        } else {
            target.len().min(amt as usize)
        };
        let core = &mut self.core;
        if want == 0 {
            core.check()?;
            return Ok(0);
        }
        let target = &mut target[..want];
        let got = py.detach(|| core.read_available(target))?;
        if got == 0 {
            core.nothing_to_read()?;
        }
        Ok(got)
    }

    /// Encrypt plaintext; takes all of it once the handshake is complete.
    fn write(&mut self, py: Python<'_>, data: PyBuffer<u8>) -> PyResult<usize> {
        let core = &mut self.core;
        core.check()?;
        if core.shut_down {
            return Err(Failure::Generic("connection is shut down".into()).into());
        }
        let slice = buffer_slice(&data)?;
        let n = py.detach(|| -> Result<usize, Failure> {
            core.handshake()?;
            if slice.is_empty() {
                return Ok(0);
            }
            let mut w = core.conn.writer();
            std::io::Write::write_all(&mut w, slice)
                .map_err(|e| Failure::Generic(format!("encrypting failed: {e}")))?;
            Ok(slice.len())
        })?;
        Ok(n)
    }

    /// Queue a close_notify alert for the peer (idempotent).
    fn shutdown(&mut self) {
        let core = &mut self.core;
        if !core.shut_down {
            core.shut_down = true;
            if core.error.is_none() {
                core.conn.send_close_notify();
            }
        }
    }

    fn handshake_complete(&self) -> bool {
        !self.core.conn.is_handshaking()
    }

    /// The peer's leaf certificate (DER), if any.
    fn peer_certificate<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.core
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| PyBytes::new(py, c.as_ref()))
    }

    /// The peer's certificate chain (DER, leaf first) as it sent it.
    fn peer_chain<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.core
            .conn
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| PyBytes::new(py, c.as_ref())).collect())
            .unwrap_or_default()
    }

    /// IANA id of the negotiated cipher suite (None before the handshake completes).
    fn cipher_suite(&self) -> Option<u16> {
        if self.core.conn.is_handshaking() {
            return None;
        }
        self.core
            .conn
            .negotiated_cipher_suite()
            .map(|s| u16::from(s.suite()))
    }

    fn alpn_protocol<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        if self.core.conn.is_handshaking() {
            return None;
        }
        self.core.conn.alpn_protocol().map(|p| PyBytes::new(py, p))
    }

    /// 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3); None before the handshake completes.
    fn protocol_version(&self) -> Option<u16> {
        if self.core.conn.is_handshaking() {
            return None;
        }
        self.core.conn.protocol_version().map(u16::from)
    }

    /// IANA id of the key exchange group used (None before the handshake completes, and
    /// after a TLS 1.2 resumption, which exchanges no key).
    fn negotiated_group(&self) -> Option<u16> {
        if self.core.conn.is_handshaking() {
            return None;
        }
        self.core
            .conn
            .negotiated_key_exchange_group()
            .map(|g| u16::from(g.name()))
    }

    /// Server side: the SNI name the client sent.
    fn server_name(&self) -> Option<String> {
        match &self.core.conn {
            rustls::Connection::Server(s) => s.server_name().map(str::to_owned),
            rustls::Connection::Client(_) => None,
        }
    }

    fn close_notify_received(&self) -> bool {
        self.core.close_notify_received
    }
}
