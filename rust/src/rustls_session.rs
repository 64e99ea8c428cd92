//! The rustls engine's `TlsSession`: a `rustls::Connection` plus the queue rustls needs.
//!
//! rustls refuses ciphertext while decrypted plaintext is unread ("received plaintext buffer
//! full"), so the session keeps its own incoming queue and feeds rustls as it makes room.
//!
//! Servers whose configuration lists ALPN protocols start as a `rustls::server::Acceptor`: once
//! the ClientHello is in, a chooser picks the configuration. A client offering none of our
//! protocols then gets a configuration without ALPN, so the handshake completes without it, as
//! with OpenSSL (rustls alone would abort with `no_application_protocol`).

use std::io::{ErrorKind, Read};
use std::sync::Arc;

use rustls::server::{Acceptor, ClientHello};

use crate::errors::{map_rustls_error, Failure};
use crate::session::TlsSession;

/// A byte queue with a read cursor; compacted lazily.
#[derive(Default)]
pub struct ByteQueue {
    pub buf: Vec<u8>,
    pos: usize,
}

impl ByteQueue {
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    pub fn extend(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }
}

/// Picks a server configuration once the ClientHello is known.
pub type ConfigChooser =
    Arc<dyn Fn(&ClientHello<'_>) -> Arc<rustls::ServerConfig> + Send + Sync + 'static>;

// The session itself is boxed (`Box<dyn TlsSession>`): the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Stage {
    /// A server waiting for the ClientHello to choose its configuration.
    Accepting(Box<Acceptor>, ConfigChooser),
    Running(rustls::Connection),
    /// Accepting the ClientHello failed (its alert is in `alert_out`).
    Refused,
}

const RAGGED: &str = "EOF occurred in violation of protocol: the peer closed the transport \
                      without a TLS close_notify";

pub struct RustlsSession {
    stage: Stage,
    incoming: ByteQueue,
    /// An alert produced while accepting (before any rustls::Connection exists).
    alert_out: Vec<u8>,
    /// The transport reported EOF.
    eof: bool,
    /// EOF was passed on to rustls (only once the queue is drained).
    eof_fed: bool,
    close_notify_received: bool,
    shut_down: bool,
    /// Ciphertext (or EOF) reached rustls since the last `process_new_packets`.
    unprocessed: bool,
}

impl RustlsSession {
    pub fn new(mut conn: rustls::Connection) -> Self {
        // write() takes all the data it is given: no limit on buffered records.
        conn.set_buffer_limit(None);
        Self::with_stage(Stage::Running(conn))
    }

    /// A server that picks its configuration from the ClientHello (see the module docs).
    pub fn accepting(choose: ConfigChooser) -> Self {
        Self::with_stage(Stage::Accepting(Box::default(), choose))
    }

    fn with_stage(stage: Stage) -> Self {
        RustlsSession {
            stage,
            incoming: ByteQueue::default(),
            alert_out: Vec::new(),
            eof: false,
            eof_fed: false,
            close_notify_received: false,
            shut_down: false,
            unprocessed: false,
        }
    }

    fn conn(&self) -> Option<&rustls::Connection> {
        match &self.stage {
            Stage::Running(c) => Some(c),
            _ => None,
        }
    }

    fn established(&self) -> Option<&rustls::Connection> {
        self.conn().filter(|c| !c.is_handshaking())
    }

    fn fail(&mut self, err: &rustls::Error) -> Failure {
        let handshaking = self.is_handshaking();
        // rustls queued an alert for the peer: drain_outgoing hands it out.
        map_rustls_error(err, handshaking)
    }

    fn process(&mut self) -> Result<rustls::IoState, Failure> {
        let Stage::Running(conn) = &mut self.stage else {
            return Err(Failure::Generic(
                "internal error: no rustls connection".into(),
            ));
        };
        match conn.process_new_packets() {
            Ok(st) => {
                if st.peer_has_closed() {
                    self.close_notify_received = true;
                }
                Ok(st)
            }
            Err(e) => Err(self.fail(&e)),
        }
    }

    /// Server side: read the ClientHello from the queue and choose the configuration.
    fn accept(&mut self) -> Result<(), Failure> {
        while let Stage::Accepting(acceptor, choose) = &mut self.stage {
            let accepted = match acceptor.accept() {
                Ok(Some(accepted)) => accepted,
                Ok(None) => {
                    if self.incoming.is_empty() {
                        return Ok(());
                    }
                    let mut reader = self.incoming.data();
                    match acceptor.read_tls(&mut reader) {
                        Ok(n) => self.incoming.consume(n),
                        Err(e) => {
                            self.stage = Stage::Refused;
                            return Err(Failure::protocol(format!(
                                "TLS protocol error: {e} (is the peer speaking TLS?)"
                            )));
                        }
                    }
                    continue;
                }
                Err((err, mut alert)) => {
                    let _ = alert.write_all(&mut self.alert_out);
                    self.stage = Stage::Refused;
                    return Err(map_rustls_error(&err, true));
                }
            };
            let config = choose(&accepted.client_hello());
            match accepted.into_connection(config) {
                Ok(conn) => {
                    let mut conn = rustls::Connection::Server(conn);
                    conn.set_buffer_limit(None);
                    self.stage = Stage::Running(conn);
                }
                Err((err, mut alert)) => {
                    let _ = alert.write_all(&mut self.alert_out);
                    self.stage = Stage::Refused;
                    return Err(map_rustls_error(&err, true));
                }
            }
        }
        Ok(())
    }

    /// `process_new_packets`, unless nothing was fed during the handshake (`None`).
    ///
    /// While a server rejects 0-RTT data, every `process_new_packets` call trial-decrypts
    /// again the early-data records still in rustls' buffer, spending its 16 KiB skip budget
    /// each time: calling it only when new ciphertext arrived keeps that budget rustls' own.
    fn refresh(&mut self) -> Result<Option<rustls::IoState>, Failure> {
        if !self.unprocessed && self.is_handshaking() {
            return Ok(None);
        }
        self.process().map(Some)
    }

    /// Feed queued ciphertext, then `fresh`, to rustls as far as it takes it; queue the rest.
    fn pump(&mut self, fresh: &[u8]) -> Result<(), Failure> {
        self.pump_into(fresh, &mut []).map(|_| ())
    }

    /// `pump`, moving plaintext into `out` whenever rustls' 16 KiB of decrypted data is full
    /// (then rustls takes more of `fresh` instead of it being queued). Returns the bytes moved.
    fn pump_into(&mut self, fresh: &[u8], out: &mut [u8]) -> Result<usize, Failure> {
        let mut fresh = fresh;
        let mut got = 0;
        if matches!(self.stage, Stage::Accepting(..)) {
            self.incoming.extend(fresh);
            fresh = &[];
            self.accept()?;
        }
        let Stage::Running(_) = self.stage else {
            return Ok(got);
        };
        loop {
            // Give rustls all it takes, then process once (see `refresh`).
            let mut fed = false;
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
                let Stage::Running(conn) = &mut self.stage else {
                    unreachable!()
                };
                let mut reader = src;
                match conn.read_tls(&mut reader) {
                    Ok(0) => {
                        // rustls saw close_notify: whatever follows is not for us.
                        self.incoming.clear();
                        fresh = &[];
                        break;
                    }
                    Ok(n) => {
                        fed = true;
                        if from_queue {
                            self.incoming.consume(n);
                        } else {
                            fresh = &fresh[n..];
                        }
                    }
                    // "message buffer full": process what it holds, then go on. Full right
                    // after processing means a message larger than rustls accepts.
                    Err(e) if e.kind() == ErrorKind::InvalidData => {
                        if fed {
                            break;
                        }
                        return Err(Failure::protocol(format!("TLS protocol error: {e}")));
                    }
                    // "received plaintext buffer full": make room in `out`, else wait for the
                    // application to read.
                    Err(_) => {
                        if got == out.len() || self.is_handshaking() {
                            break;
                        }
                        match self.read_plain(&mut out[got..]) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            // Comes back from the next read, after the bytes moved so far.
                            Err(_) => break,
                        }
                    }
                }
            }
            if !fed {
                break;
            }
            self.unprocessed = true;
            if let Err(e) = self.process() {
                // rustls keeps the error: it comes back from the next call, after the
                // plaintext already moved.
                return if got == 0 { Err(e) } else { Ok(got) };
            }
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
            if let Stage::Running(conn) = &mut self.stage {
                let mut empty: &[u8] = &[];
                let _ = conn.read_tls(&mut empty);
            }
            if let Err(e) = self.process() {
                return if got == 0 { Err(e) } else { Ok(got) };
            }
        }
        Ok(got)
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

    /// Plaintext bytes ready to read, after feeding what is queued.
    fn readable(&mut self) -> Result<usize, Failure> {
        self.pump(&[])?;
        if !matches!(self.stage, Stage::Running(_)) {
            return Ok(0);
        }
        Ok(self.refresh()?.map_or(0, |st| st.plaintext_bytes_to_read()))
    }

    /// Why nothing could be read: `Ok(())` means clean EOF.
    fn nothing_to_read(&self) -> Result<(), Failure> {
        if self.is_handshaking() {
            return Err(self.handshake_blocked());
        }
        if self.close_notify_received {
            return Ok(());
        }
        if self.eof_fed {
            return Err(Failure::Ragged(RAGGED));
        }
        Err(Failure::WantRead("no application data available yet"))
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        let Stage::Running(conn) = &mut self.stage else {
            return Ok(0);
        };
        match conn.reader().read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(Failure::Ragged(RAGGED)),
            Err(e) => Err(Failure::Generic(format!("reading plaintext failed: {e}"))),
        }
    }
}

impl TlsSession for RustlsSession {
    fn feed(&mut self, data: &[u8]) -> Result<(), Failure> {
        self.pump(data)
    }

    fn feed_read(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize, Failure> {
        let got = self.pump_into(data, out)?;
        if got == out.len() || self.is_handshaking() {
            return Ok(got);
        }
        // The plaintext of the records rustls took without refusing more.
        Ok(got + self.read(&mut out[got..]).unwrap_or(0))
    }

    fn feed_eof(&mut self) -> Result<(), Failure> {
        self.eof = true;
        self.pump(&[])
    }

    fn incoming_len(&self) -> usize {
        self.incoming.len()
    }

    fn drain_outgoing(&mut self, out: &mut Vec<u8>) {
        if !self.alert_out.is_empty() {
            out.append(&mut self.alert_out);
        }
        if let Stage::Running(conn) = &mut self.stage {
            while conn.wants_write() {
                match conn.write_tls(out) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }

    fn pending_outgoing(&mut self) -> Option<usize> {
        if !self.alert_out.is_empty() {
            return None;
        }
        match self.stage {
            Stage::Running(_) => self
                .refresh()
                .ok()
                .flatten()
                .map(|st| st.tls_bytes_to_write()),
            _ => Some(0),
        }
    }

    fn take_outgoing(&mut self, out: &mut crate::buffers::RawSink) {
        let Stage::Running(conn) = &mut self.stage else {
            return;
        };
        loop {
            match conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn handshake(&mut self) -> Result<(), Failure> {
        if !self.is_handshaking() {
            return Ok(());
        }
        self.pump(&[])?;
        if self.is_handshaking() {
            return Err(self.handshake_blocked());
        }
        Ok(())
    }

    fn is_handshaking(&self) -> bool {
        self.conn().is_none_or(|c| c.is_handshaking())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        // Fill `buf` record after record as far as the queued ciphertext goes. A failure after
        // some bytes were read stops the loop; it comes back on the next call.
        let mut got = 0;
        while got < buf.len() {
            let step = self.readable().and_then(|avail| {
                if avail == 0 {
                    return Ok(0);
                }
                let n = avail.min(buf.len() - got);
                self.read_plain(&mut buf[got..got + n])
            });
            match step {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if got == 0 => return Err(e),
                Err(_) => break,
            }
        }
        if got == 0 {
            self.nothing_to_read()?;
        }
        Ok(got)
    }

    fn plaintext_len(&mut self) -> usize {
        self.readable().unwrap_or(0)
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, Failure> {
        if self.shut_down {
            return Err(Failure::Usage(
                "the TLS connection is shut down (close_notify sent): no more data can be sent"
                    .into(),
            ));
        }
        self.handshake()?;
        if data.is_empty() {
            return Ok(0);
        }
        let Stage::Running(conn) = &mut self.stage else {
            unreachable!("handshake() succeeded")
        };
        std::io::Write::write_all(&mut conn.writer(), data)
            .map_err(|e| Failure::Generic(format!("encrypting failed: {e}")))?;
        Ok(data.len())
    }

    fn shutdown(&mut self) {
        if !self.shut_down {
            self.shut_down = true;
            if let Stage::Running(conn) = &mut self.stage {
                conn.send_close_notify();
            }
        }
    }

    fn close_notify_received(&self) -> bool {
        self.close_notify_received
    }

    fn peer_certificates(&self) -> Vec<Vec<u8>> {
        self.conn()
            .and_then(|c| c.peer_certificates())
            .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default()
    }

    fn cipher_suite(&self) -> Option<u16> {
        self.established()?
            .negotiated_cipher_suite()
            .map(|s| u16::from(s.suite()))
    }

    fn protocol_version(&self) -> Option<u16> {
        self.established()?.protocol_version().map(u16::from)
    }

    fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.established()?.alpn_protocol().map(<[u8]>::to_vec)
    }

    fn server_name(&self) -> Option<String> {
        match self.conn()? {
            rustls::Connection::Server(s) => s.server_name().map(str::to_owned),
            rustls::Connection::Client(_) => None,
        }
    }

    fn session_resumed(&self) -> bool {
        self.established()
            .and_then(|c| c.handshake_kind())
            .is_some_and(|k| k == rustls::HandshakeKind::Resumed)
    }

    fn negotiated_group(&self) -> Option<u16> {
        let group = self.established()?.negotiated_key_exchange_group()?.name();
        Some(u16::from(group))
    }
}
