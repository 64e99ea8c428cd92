//! `TlsSession`: the sans-I/O core an engine implements.
//!
//! Everything else is written once over this trait: the Python `Connection` object (locking, the
//! panic boundary, sticky fatal errors, the outgoing queue, buffer handling) in `conn.rs`. An
//! engine only says how ciphertext goes in and out and how plaintext is read and written.
//!
//! Rules every implementation keeps (the generic layer relies on them):
//! - `feed` never refuses: it queues what the engine cannot take yet (the generic layer bounds
//!   the queue and refuses more input itself).
//! - Failures are values (`Failure`); `WantRead` means "more ciphertext is needed", anything else
//!   but `WantRead` is fatal and the generic layer raises it again on every later call. After a
//!   fatal failure `drain_outgoing` must still give the alert the engine queued for the peer.
//! - `read` never loses plaintext: a failure met after some bytes were produced is returned by
//!   the next call, after those bytes.
//! - Information methods answer `None` (or empty) until the handshake is complete.

use crate::errors::Failure;

pub trait TlsSession: Send {
    /// Hand ciphertext received from the network to the engine.
    fn feed(&mut self, data: &[u8]) -> Result<(), Failure>;

    /// The transport reached EOF (after everything fed so far).
    fn feed_eof(&mut self) -> Result<(), Failure>;

    /// Ciphertext fed and not yet consumed by the engine.
    fn incoming_len(&self) -> usize;

    /// Append all ciphertext ready for the network to `out`.
    fn drain_outgoing(&mut self, out: &mut Vec<u8>);

    /// Ciphertext the engine holds for the network, when it can tell without moving it
    /// (`None`: ask `drain_outgoing`). With `take_outgoing`, lets callers copy ciphertext once.
    fn pending_outgoing(&mut self) -> Option<usize> {
        None
    }

    /// Move ciphertext into `out` until it is full or the engine has none left (after
    /// `pending_outgoing` said how much there is).
    fn take_outgoing(&mut self, out: &mut crate::buffers::RawSink) {
        let _ = out;
    }

    /// Drive the handshake: `Ok` once it is complete, `Err(WantRead)` while it needs input,
    /// `Err(HandshakeClosed)` when the peer went away in the middle of it.
    fn handshake(&mut self) -> Result<(), Failure>;

    fn is_handshaking(&self) -> bool;

    /// Decrypt into `buf` (not empty). `Ok(n > 0)`: plaintext; `Ok(0)`: clean close (the peer's
    /// close_notify after a complete handshake); `Err(WantRead)`: nothing yet; `Err(Ragged)`: the
    /// transport ended without close_notify.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Failure>;

    /// `feed(data)`, then decrypted bytes into `out` (not empty) as far as they are ready, in
    /// one step (after the handshake). Engines that hold little decrypted data (rustls: 16 KiB)
    /// move it into `out` while they take `data` instead of queueing what they cannot take yet.
    /// `Err` only as `feed` fails; what stops the reading (nothing more yet, the end of the
    /// stream, a failure) is what the next `read` reports.
    fn feed_read(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize, Failure> {
        self.feed(data)?;
        if self.is_handshaking() {
            return Ok(0);
        }
        Ok(self.read(out).unwrap_or(0))
    }

    /// Decrypted bytes that `read` can return without more input.
    fn plaintext_len(&mut self) -> usize;

    /// Encrypt plaintext. Before the handshake is complete this drives it (and fails with
    /// `WantRead` if it cannot finish); afterwards it takes everything.
    fn write(&mut self, data: &[u8]) -> Result<usize, Failure>;

    /// Queue a close_notify alert (idempotent; nothing before the handshake completed).
    fn shutdown(&mut self);

    fn close_notify_received(&self) -> bool;

    /// DER of the certificates the peer sent, leaf first.
    fn peer_certificates(&self) -> Vec<Vec<u8>>;

    /// IANA id of the negotiated cipher suite.
    fn cipher_suite(&self) -> Option<u16>;

    /// 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3).
    fn protocol_version(&self) -> Option<u16>;

    fn alpn_protocol(&self) -> Option<Vec<u8>>;

    /// Server side: the SNI name the client sent.
    fn server_name(&self) -> Option<String>;

    /// Whether the handshake resumed an earlier session.
    fn session_resumed(&self) -> bool;

    /// The key exchange group, by its codepoint in IANA's TLS Supported Groups registry (named
    /// in Python: `unitls._engine.GROUP_NAMES`).
    fn negotiated_group(&self) -> Option<u16>;
}
