//! Native socket I/O for any engine's `Connection`: TLS over a file descriptor, no Python per
//! TLS record.
//!
//! Two Python classes share one core (`Core`), which follows exactly the rules of the Python
//! driver (`unitls._drive`: deadlines, non-blocking calls, full duplex, EOF, close):
//! - `SocketCore`: the hot path of unitls' own `TLSSocket`s (`unitls._nativesock`), raising
//!   `unitls` exceptions, with its own timeout.
//! - `SSLSocketCore`: the `_sslobj` of an `ssl.SSLSocket` in the `ssl` bridge
//!   (`unitls.compat._nativeobj`), with `_ssl._SSLSocket`'s calls (`read`, `write`, ...), raising
//!   the `ssl` module's exceptions and taking the timeout of the `SSLSocket` at each call.
//!
//! Theory of operation
//! -------------------
//! Every operation runs with the GIL released. The engine (the `Connection`'s mutex) is only
//! held while the engine works, never during a system call that can wait. Three more locks:
//! `send` (ciphertext leaves in engine order: whoever holds it drains the engine and sends),
//! `recv` (one receiver at a time; a thread that waited for it retries the engine first, since
//! another thread's chunk may be what it needed) and `hs` (one handshake). Reads never wait for
//! `send`: a reader that produced ciphertext (a KeyUpdate answer, an alert) tries the lock and,
//! if a writer holds it, leaves the ciphertext to that writer (`flush_wanted`, checked by the
//! writer after it releases the lock). While a reader waits for data it also sends its own
//! unsent ciphertext when the socket has room.
//!
//! All socket calls are non-blocking (`MSG_DONTWAIT`, whatever the descriptor's mode); waiting
//! is `poll` with what is left of the operation's deadline, so a timeout bounds an operation as
//! a whole. Timeout 0 never waits: `WantRead`/`WantWrite` reach the caller, who retries with the
//! same arguments. Ciphertext the socket did not take stays in `SendState` and goes first next
//! time; a write that finds it still stuck raises `WantWrite` before taking anything.
//!
//! How much is received per system call: callers that `select()` on the socket before reading
//! (websockets' sync client, many others; the stdlib's OpenSSL reads record by record) must
//! never wait for something hidden in the engine: plaintext they did not get, or the peer's
//! close_notify behind the data they got. Records are tracked from their 5-byte headers, and
//! - small reads (and the handshake) receive the rest of the current record plus the next
//!   record's header: one system call per record; the next record's body is still in the
//!   socket, so `select()` still fires for it;
//! - reads of 16 KiB or more peek at up to 256 KiB and take the whole records whose plaintext
//!   fits in the caller's buffer (`plan_batch`), stopping before any record small enough to be
//!   an alert: many records per system call, all of them delivered in this call;
//! - waiting for close_notify before `unwrap()` takes exactly one record at a time, so what the
//!   peer sends after it stays in the socket.
//!
//! Waiting spins briefly before it sleeps (`Spinner`): a blocking wait first polls the socket
//! without sleeping for up to `UNITLS_SPIN_US` microseconds (default 30), then sleeps in `poll`.
//! A thread that sleeps for every message pays for its CPU's wakeup when the message comes; on
//! virtual machines, whose idle CPUs wake through the hypervisor, that was 30-40 µs per message
//! (100-byte round trips between two threads: 13,000/s sleeping, 103,000/s spinning 30 µs). Spins
//! adapt per socket: one that ends without the socket becoming ready doubles the number of
//! following waits that sleep at once (up to `SPIN_BACKOFF_MAX`); one that ends ready resets it.
//! A peer that answers slowly therefore costs one spin per 256 waits; a single-CPU machine, or
//! `UNITLS_SPIN_US=0`, never spins. Non-blocking calls never wait, hence never spin. A signal
//! that arrives during a spin (or while the thread handles what woke it) interrupts no system
//! call, so with spinning on the main thread (where Python runs signal handlers) sleeps at most
//! 50 ms at a time and checks signals in between, as the OpenSSL engine's sockets do: such a
//! signal is handled at most 50 ms late instead of never.
//!
//! The Python socket object owns the descriptor: it is looked up (`fileno()`) at every call,
//! never closed here. A unitls socket's `close()` wakes the calls of other threads still inside
//! (`SocketCore::_stop_io`); an `ssl.SSLSocket`'s calls nothing of ours, so the bridge's waits
//! sleep at most 50 ms at a time and look at its `fileno()` in between (`check_bridge_sock`):
//! a thread blocked in `recv()` ends with `OSError(EBADF)` soon after another thread closes
//! the socket, where the stdlib's stays blocked until data comes.

use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buffers::ByteView;
use crate::conn::{Connection, Inner};
use crate::errors::{
    Failure, TLSConnectionError, TLSError, TLSTimeoutError, WantReadError, WantWriteError,
};

/// Most ciphertext taken from the socket per receive.
const RECV_MAX: usize = 256 * 1024;
/// Plaintext encrypted per engine call (its ciphertext goes out in one send call).
const WRITE_CHUNK: usize = 256 * 1024;
/// How long `close()` waits for other threads' calls to leave (they are woken at once).
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How long a blocking operation that failed waits to deliver the engine's alert.
const ALERT_WAIT: Duration = Duration::from_secs(1);
/// Smallest per-record expansion of any AEAD suite (TLS 1.2 ChaCha20: header 5 + tag 16).
const MIN_OVERHEAD: usize = 21;
/// TLS 1.3 adds the inner content type byte.
const TLS13_OVERHEAD: usize = 22;
/// Reads asking for at least this much take several records per receive (`plan_batch`).
const BATCH_MIN: usize = 16 * 1024;
/// Records this short may be alerts (TLS 1.2 AES-GCM alert: 8 + 2 + 16 bytes of body).
const SMALL_RECORD: usize = 26;
/// Ciphertext given to the engine per call from a received batch (a record or two: what rustls
/// takes before its plaintext buffer is full).
const FEED_PIECE: usize = 20 * 1024;
/// Plaintext gathered per read while waiting for close_notify.
const DISCARD_SIZE: usize = 16 * 1024;
/// Spinning before sleeping (the theory of operation): the default budget, and the most waits
/// that sleep at once after spins that failed.
const SPIN_DEFAULT_US: u64 = 30;
const SPIN_BACKOFF_MAX: u32 = 256;

/// How long a wait spins before it sleeps: `UNITLS_SPIN_US` (default `SPIN_DEFAULT_US`; 0 turns
/// spinning off), zero on a machine with one CPU (the peer cannot run while we spin).
fn spin_budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let one_cpu = std::thread::available_parallelism().map_or(true, |n| n.get() < 2);
        let us = spin_setting().unwrap_or(SPIN_DEFAULT_US);
        if one_cpu {
            Duration::ZERO
        } else {
            Duration::from_micros(us)
        }
    })
}

/// `UNITLS_SPIN_US` read: the budget in µs, or why the value cannot be used (the module's
/// import warns with that, and the default applies).
pub(crate) fn spin_setting() -> Result<u64, String> {
    const MAX_US: u64 = 10_000;
    let Some(value) = std::env::var_os("UNITLS_SPIN_US") else {
        return Ok(SPIN_DEFAULT_US);
    };
    match value.to_str().and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(us) if us <= MAX_US => Ok(us),
        _ => Err(format!(
            "UNITLS_SPIN_US={:?} is not a whole number of microseconds from 0 to {MAX_US}: \
             spinning before sleeping uses the default, {SPIN_DEFAULT_US} µs (0 turns it off)",
            value.to_string_lossy()
        )),
    }
}

/// Per-socket state of spinning before sleeping: after a spin that found nothing, `skip` waits
/// sleep at once; `backoff` (doubled by each failed spin, reset by a successful one) is the
/// next `skip`. Races between a reader and a writer thread only blur the statistics. `scale`
/// multiplies the budget (see `SpinWait`).
struct Spinner {
    skip: AtomicU32,
    backoff: AtomicU32,
    scale: u32,
}

impl Default for Spinner {
    fn default() -> Self {
        Spinner {
            skip: AtomicU32::new(0),
            backoff: AtomicU32::new(0),
            scale: 1,
        }
    }
}

/// What a spin before sleeping found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spin {
    /// The descriptor is ready (or polling it failed: the sleeping poll reports that).
    Ready,
    /// Spun for the whole budget, in vain.
    Missed,
    /// Did not spin (backing off, spinning off, or a non-blocking call).
    Skipped,
}

/// The longest sleep of the main thread while spinning is on, in ms (see `Core::wait_fd`).
const SIGNAL_SLICE_MS: c_int = 50;

/// Whether this is the process's main thread (its id is the process id), asked once per thread.
fn is_main_thread() -> bool {
    thread_local! {
        static MAIN: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    }
    MAIN.with(|main| match main.get() {
        Some(is_main) => is_main,
        None => {
            // SAFETY: plain system calls without arguments.
            let is_main = unsafe { libc::gettid() == libc::getpid() };
            main.set(Some(is_main));
            is_main
        }
    })
}

impl Spinner {
    /// Poll `pfd` without sleeping for up to the budget, unless spinning is off or backing off.
    fn spin(&self, pfd: &mut libc::pollfd) -> Spin {
        if self.skips() {
            return Spin::Skipped;
        }
        self.spin_now(pfd)
    }

    /// Whether this wait does not spin: spinning is off, or this wait is one of the `skip`
    /// after a spin that missed (counted down here).
    fn skips(&self) -> bool {
        if spin_budget().is_zero() {
            return true;
        }
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The spin itself, once `skips` said to: updates the backoff with what it found.
    fn spin_now(&self, pfd: &mut libc::pollfd) -> Spin {
        let budget = spin_budget() * self.scale;
        let start = Instant::now();
        loop {
            // SAFETY: one valid pollfd; a zero timeout never sleeps.
            match unsafe { libc::poll(pfd, 1, 0) } {
                0 => {}
                n if n > 0 => {
                    self.backoff.store(0, Ordering::Relaxed);
                    return Spin::Ready;
                }
                _ => return Spin::Skipped, // EINTR...: the sleeping poll handles it
            }
            if start.elapsed() >= budget {
                break;
            }
            std::hint::spin_loop();
        }
        let backoff = (self.backoff.load(Ordering::Relaxed) * 2).clamp(1, SPIN_BACKOFF_MAX);
        self.backoff.store(backoff, Ordering::Relaxed);
        self.skip.store(backoff, Ordering::Relaxed);
        Spin::Missed
    }
}

// -- deadlines and errors ------------------------------------------------------------------------

/// When an operation must end.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    /// Non-blocking: never wait.
    Now,
    Until(Instant),
}

impl Wait {
    fn from_timeout(timeout: Option<f64>) -> Self {
        match timeout {
            None => Wait::Forever,
            Some(t) if t <= 0.0 => Wait::Now,
            Some(t) => Wait::Until(Instant::now() + Duration::from_secs_f64(t)),
        }
    }

    fn nonblocking(self) -> bool {
        matches!(self, Wait::Now)
    }

    /// poll()'s timeout in ms (-1: none); `Timeout` once the deadline has passed.
    fn poll_ms(self) -> Result<c_int, IoErr> {
        match self {
            Wait::Forever => Ok(-1),
            Wait::Now => Ok(0),
            Wait::Until(at) => {
                let now = Instant::now();
                if now >= at {
                    return Err(IoErr::Timeout);
                }
                let ms = (at - now).as_micros().div_ceil(1000);
                Ok(ms.min(c_int::MAX as u128) as c_int)
            }
        }
    }

    /// Take `lock`, waiting no longer than the deadline; `busy` when non-blocking.
    fn lock<'a, T>(self, lock: &'a Mutex<T>, busy: IoErr) -> Result<MutexGuard<'a, T>, IoErr> {
        if let Some(guard) = lock.try_lock() {
            return Ok(guard);
        }
        match self {
            Wait::Now => Err(busy),
            Wait::Forever => Ok(lock.lock()),
            Wait::Until(at) => lock.try_lock_until(at).ok_or(IoErr::Timeout),
        }
    }
}

/// Why an operation stopped, before it is raised in one vocabulary or the other.
enum IoErr {
    Tls(Failure),
    WantRead,
    WantWrite,
    Timeout,
    Os {
        errno: i32,
        what: &'static str,
    },
    Py(PyErr),
    /// Another thread closed the socket (`SocketCore::_stop_io`).
    Closed,
}

impl From<Failure> for IoErr {
    fn from(f: Failure) -> Self {
        match f {
            Failure::WantRead(_) => IoErr::WantRead,
            other => IoErr::Tls(other),
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    // "Connection reset by peer (os error 104)" -> "Connection reset by peer"
    match text.rfind(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn sys_recv(fd: c_int, buf: &mut [u8], flags: c_int) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

fn sys_send(fd: c_int, buf: &[u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// Whether `fd` is a TCP socket (where `MSG_TRUNC` discards received bytes).
fn is_tcp(fd: c_int) -> bool {
    let mut proto: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `proto` and `len` are valid for getsockopt to write.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            (&mut proto as *mut c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && proto == libc::IPPROTO_TCP
}

/// Turn Nagle's algorithm off (`on`) or back on for a TCP socket; errors are ignored (the
/// connection works either way, only its timing differs).
fn set_no_delay(fd: c_int, on: bool) {
    let value: c_int = on.into();
    // SAFETY: `value` lives across the call and its size is passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&value as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        );
    }
}

/// After a failed handshake (the alert is out): read off, without waiting, the records the peer
/// sent after the one that failed. Closing a socket with unread bytes sends a TCP reset, which
/// can destroy the alert before the peer reads it.
fn drain_unread(fd: c_int) {
    let mut sink = [0u8; 16 * 1024];
    for _ in 0..16 {
        match sys_recv(fd, &mut sink, 0) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn would_block(e: i32) -> bool {
    e == libc::EAGAIN || e == libc::EWOULDBLOCK
}

// -- record tracking -----------------------------------------------------------------------------

/// Where the received ciphertext stands in the record stream (from the 5-byte headers).
#[derive(Default, Clone)]
struct Tracker {
    header: [u8; 5],
    header_len: usize,
    record_len: usize,
    body_left: usize,
}

impl Tracker {
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.header_len < 5 {
                let k = (5 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + k].copy_from_slice(&data[..k]);
                self.header_len += k;
                data = &data[k..];
                if self.header_len == 5 {
                    self.record_len = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                    self.body_left = self.record_len;
                    if self.body_left == 0 {
                        self.header_len = 0;
                    }
                }
            } else {
                let k = self.body_left.min(data.len());
                self.body_left -= k;
                data = &data[k..];
                if self.body_left == 0 {
                    self.header_len = 0;
                }
            }
        }
    }

    /// Bytes that complete the current record (its header, when that is not known yet).
    fn exact(&self) -> usize {
        if self.header_len < 5 {
            5 - self.header_len
        } else {
            self.body_left
        }
    }
}

/// How many of the `peeked` bytes (the socket's next bytes) a read for `plain` bytes of
/// plaintext takes: whole records whose plaintext fits, never a record after one that may be an
/// alert (it could be the peer's close_notify, which the caller must meet in a later read, after
/// `select()` said the socket is readable), and never beyond a partial record (the rest of it is
/// still coming). The first record is always taken.
fn plan_batch(tracker: &Tracker, peeked: &[u8], plain: usize, overhead: usize) -> usize {
    let mut t = tracker.clone();
    let mut pos = 0;
    let mut budget = plain;
    let mut first = true;
    while pos < peeked.len() {
        if t.header_len < 5 {
            let need = 5 - t.header_len;
            if peeked.len() - pos < need {
                return peeked.len(); // a partial header: its record is still coming
            }
            if t.header_len == 0 && !first {
                let len = u16::from_be_bytes([peeked[pos + 3], peeked[pos + 4]]) as usize;
                if len <= SMALL_RECORD || (len + 5).saturating_sub(overhead) > budget {
                    return pos;
                }
            }
            t.advance(&peeked[pos..pos + need]);
            pos += need;
        }
        let take = t.body_left.min(peeked.len() - pos);
        t.advance(&peeked[pos..pos + take]);
        pos += take;
        if t.header_len == 5 {
            return pos; // the record is incomplete: take what is here, the rest follows
        }
        let len = t.record_len;
        budget = budget.saturating_sub((len + 5).saturating_sub(overhead));
        if len <= SMALL_RECORD {
            return pos;
        }
        first = false;
    }
    pos
}

/// How much a receive may take.
#[derive(Clone, Copy)]
enum Want {
    /// The rest of the current record only (waiting for close_notify before `unwrap()`).
    Exact,
    /// The rest of the current record and the next one's header (the handshake).
    Record,
    /// Records whose plaintext fits in this many bytes (see the module docs).
    Plain(usize),
}

// -- the core ------------------------------------------------------------------------------------

#[derive(Default)]
struct SendState {
    /// Ciphertext taken from the engine; `buf[pos..]` is not sent yet.
    buf: Vec<u8>,
    pos: usize,
}

impl SendState {
    fn unsent(&self) -> bool {
        self.pos < self.buf.len()
    }
}

#[derive(Default)]
struct RecvState {
    buf: Vec<u8>,
    tracker: Tracker,
    /// `buf[fed..end]`: ciphertext received and not yet given to the engine. A batch is fed a
    /// piece at a time, as the engine asks for more, so that it never has to queue (copy) what
    /// it cannot take yet; the read that received the batch consumes all of it.
    fed: usize,
    end: usize,
}

impl RecvState {
    fn unfed(&self) -> bool {
        self.fed < self.end
    }
}

/// One connection's engine and I/O state; every method runs without the GIL.
struct Core {
    conn: Py<Connection>,
    send: Mutex<SendState>,
    recv: Mutex<RecvState>,
    hs: Mutex<()>,
    /// Plaintext scratch for `recv(n)` (a `bytes` result is built from it).
    scratch: Mutex<Vec<u8>>,
    handshake_done: AtomicBool,
    peer_closed: AtomicBool,
    close_sent: AtomicBool,
    flush_wanted: AtomicBool,
    eof_received: AtomicBool,
    received: AtomicU64,
    overhead: AtomicUsize,
    /// A reset while receiving during the handshake is an EOF without close_notify (else
    /// ConnectionResetError).
    reset_is_eof: bool,
    /// The same after the handshake: always, except in the ssl bridge on Python 3.13+, whose
    /// `_ssl` reports a reset as ConnectionResetError (before 3.13: SSLEOFError).
    reset_after_handshake_is_eof: bool,
    tcp: OnceLock<bool>,
    /// Nagle's algorithm is off until the first application write has gone out (see
    /// `SocketCore::_no_delay_until_first_write`).
    nagle_after_first_write: AtomicBool,
    /// Set by `SocketCore::_stop_io` before the socket is closed: calls still inside end with
    /// `IoErr::Closed` at their next wait or receive.
    closing: AtomicBool,
    /// `SocketCore` calls inside the core with the descriptor (`InFlight` guards).
    in_flight: AtomicUsize,
    spinner: Spinner,
    /// Whether calls are counted in `in_flight` (`SocketCore`; not the bridge's `SSLSocketCore`,
    /// whose socket `ssl.SSLSocket` closes).
    tracked: bool,
    /// The bridge's `ssl.SSLSocket` (a weak reference), whose `close()` calls nothing of ours:
    /// waits without a deadline nearer than 50 ms sleep in slices and look at its `fileno()`
    /// between them, so a thread blocked in `recv()` ends soon after another thread closes it.
    bridge_sock: Option<Py<PyAny>>,
}

impl Core {
    fn new(
        conn: Py<Connection>,
        reset_is_eof: bool,
        reset_after_handshake_is_eof: bool,
        tracked: bool,
        bridge_sock: Option<Py<PyAny>>,
    ) -> Self {
        Core {
            conn,
            send: Mutex::default(),
            recv: Mutex::default(),
            hs: Mutex::new(()),
            scratch: Mutex::default(),
            handshake_done: AtomicBool::new(false),
            peer_closed: AtomicBool::new(false),
            close_sent: AtomicBool::new(false),
            flush_wanted: AtomicBool::new(false),
            eof_received: AtomicBool::new(false),
            received: AtomicU64::new(0),
            overhead: AtomicUsize::new(MIN_OVERHEAD),
            reset_is_eof,
            reset_after_handshake_is_eof,
            tcp: OnceLock::new(),
            nagle_after_first_write: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            spinner: Spinner::default(),
            tracked,
            bridge_sock,
        }
    }

    /// A signal arrived while waiting: run Python's handlers (KeyboardInterrupt...). This call
    /// does not count as in flight meanwhile: a handler may close the socket (`_stop_io` would
    /// otherwise wait for the very call it interrupted); after it, the call ends if it did.
    fn check_signals(&self) -> Result<(), IoErr> {
        if self.tracked {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let handled = Python::attach(|py| py.check_signals()).map_err(IoErr::Py);
        if self.tracked {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        handled?;
        self.check_open()
    }

    fn check_open(&self) -> Result<(), IoErr> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(IoErr::Closed);
        }
        Ok(())
    }

    /// The bridge's `ssl.SSLSocket`, while it exists (None for unitls sockets).
    fn bridge_socket<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(sock_ref) = &self.bridge_sock else {
            return Ok(None);
        };
        let sock = sock_ref.bind(py).call0()?;
        Ok((!sock.is_none()).then_some(sock))
    }

    /// The bridge's `ssl.SSLSocket` is still open (gone or `fileno() == -1`: `Closed`, which
    /// the bridge raises as `OSError(EBADF)`, and `closing` is set for every other call).
    fn check_bridge_sock(&self) -> Result<(), IoErr> {
        if self.bridge_sock.is_none() {
            return Ok(());
        }
        let open = Python::attach(|py| -> PyResult<bool> {
            Ok(match self.bridge_socket(py)? {
                None => false,
                Some(sock) => sock.call_method0(intern!(py, "fileno"))?.extract::<i64>()? >= 0,
            })
        })
        .map_err(IoErr::Py)?;
        if !open {
            self.closing.store(true, Ordering::SeqCst);
            return Err(IoErr::Closed);
        }
        Ok(())
    }

    /// After an application write: Nagle back on if it was off for the first one.
    fn first_write_done(&self, fd: c_int) {
        if self.nagle_after_first_write.load(Ordering::Relaxed)
            && self.nagle_after_first_write.swap(false, Ordering::AcqRel)
        {
            set_no_delay(fd, false);
        }
    }

    fn engine<T>(
        &self,
        check: bool,
        op: impl FnOnce(&mut Inner) -> Result<T, Failure>,
    ) -> Result<T, IoErr> {
        self.conn.get().with_engine(check, op).map_err(IoErr::from)
    }

    /// Block until the socket is readable/writable or the deadline passes (the caller retries).
    fn wait_fd(&self, fd: c_int, read: bool, write: bool, wait: Wait) -> Result<(), IoErr> {
        if wait.nonblocking() {
            return Err(if read {
                IoErr::WantRead
            } else {
                IoErr::WantWrite
            });
        }
        let ms = wait.poll_ms()?;
        let mut pfd = libc::pollfd {
            fd,
            events: (if read { libc::POLLIN } else { 0 }) | (if write { libc::POLLOUT } else { 0 }),
            revents: 0,
        };
        let spin = if ms != 0 {
            self.spinner.spin(&mut pfd)
        } else {
            Spin::Skipped
        };
        // A signal that arrives while the main thread spins, or handles what woke it, interrupts
        // no system call, so a later sleep would not see it: with spinning on, the main thread
        // (where Python runs signal handlers) sleeps at most 50 ms at a time, then checks them.
        let long = !(0..=SIGNAL_SLICE_MS).contains(&ms); // -1: no deadline
        let for_signals = !spin_budget().is_zero() && is_main_thread();
        let sliced = spin != Spin::Ready && long && (for_signals || self.bridge_sock.is_some());
        let rc = match spin {
            Spin::Ready => 1, // the sleeping poll's result, without the sleep
            // SAFETY: one valid pollfd.
            _ => unsafe { libc::poll(&mut pfd, 1, if sliced { SIGNAL_SLICE_MS } else { ms }) },
        };
        self.check_open()?; // woken by another thread's close()
        if rc == 0 && sliced {
            // Then the caller retries and waits again.
            self.check_bridge_sock()?;
            return if for_signals {
                self.check_signals()
            } else {
                Ok(())
            };
        }
        if rc < 0 {
            let e = errno();
            if e == libc::EINTR {
                return self.check_signals();
            }
            return Err(IoErr::Os {
                errno: e,
                what: "waiting for the socket failed",
            });
        }
        Ok(())
    }

    // -- sending ---------------------------------------------------------------------------------

    /// Send what is unsent, then everything the engine holds; the caller holds `send`.
    fn send_locked(&self, st: &mut SendState, fd: c_int, wait: Wait) -> Result<usize, IoErr> {
        self.check_open()?;
        let mut sent = 0;
        loop {
            if !st.unsent() {
                st.buf.clear();
                st.pos = 0;
                let buf = &mut st.buf;
                self.engine(false, |inner| {
                    if !inner.outgoing.is_empty() {
                        buf.extend_from_slice(inner.outgoing.data());
                        inner.outgoing.clear();
                    }
                    inner.session.drain_outgoing(buf);
                    Ok(())
                })?;
                if st.buf.is_empty() {
                    return Ok(sent);
                }
            }
            while st.unsent() {
                match sys_send(fd, &st.buf[st.pos..]) {
                    Ok(n) => {
                        st.pos += n;
                        sent += n;
                    }
                    Err(e) if would_block(e) => self.wait_fd(fd, false, true, wait)?,
                    Err(e) if e == libc::EINTR => self.check_signals()?,
                    Err(e) => {
                        return Err(IoErr::Os {
                            errno: e,
                            what: "sending TLS data failed",
                        })
                    }
                }
            }
        }
    }

    /// Send everything queued, waiting up to the deadline.
    fn flush(&self, fd: c_int, wait: Wait) -> Result<(), IoErr> {
        {
            let mut st = wait.lock(&self.send, IoErr::WantWrite)?;
            self.send_locked(&mut st, fd, wait)?;
        }
        if self.flush_wanted.load(Ordering::Acquire) {
            self.flush_nowait(fd);
        }
        Ok(())
    }

    /// Send what the socket takes now unless another thread is sending (it then sends this
    /// too). True: ciphertext is left that this thread should send once the socket has room.
    fn flush_nowait(&self, fd: c_int) -> bool {
        self.flush_wanted.store(true, Ordering::Release);
        while self.flush_wanted.load(Ordering::Acquire) {
            let Some(mut st) = self.send.try_lock() else {
                return false;
            };
            self.flush_wanted.store(false, Ordering::Release);
            match self.send_locked(&mut st, fd, Wait::Now) {
                Ok(_) => {}
                Err(IoErr::WantWrite) => return true,
                Err(_) => return false, // the socket is broken: the next write reports it
            }
        }
        false
    }

    fn has_unsent(&self) -> bool {
        self.send.try_lock().is_some_and(|st| st.unsent())
    }

    /// Deliver the alert the engine queued (best effort, briefly), then give back `f`.
    fn fail(&self, f: Failure, fd: c_int, wait: Wait) -> IoErr {
        if let Some(mut st) = self.send.try_lock() {
            let brief = if wait.nonblocking() {
                Wait::Now
            } else {
                Wait::Until(Instant::now() + ALERT_WAIT)
            };
            let _ = self.send_locked(&mut st, fd, brief);
        } else {
            self.flush_wanted.store(true, Ordering::Release);
        }
        if !self.handshake_done.load(Ordering::Acquire) {
            drain_unread(fd);
        }
        IoErr::Tls(f)
    }

    // -- receiving -------------------------------------------------------------------------------

    /// Receive ciphertext (as much as `want` allows, see the module docs) and feed it, or the
    /// EOF, to the engine.
    fn receive(&self, fd: c_int, wait: Wait, want: Want) -> Result<(), IoErr> {
        let seen = self.received.load(Ordering::Acquire);
        let mut st = wait.lock(&self.recv, IoErr::WantRead)?;
        self.check_open()?; // the lock's holder may have been woken by close()
        if seen != self.received.load(Ordering::Acquire) {
            return Ok(()); // another thread received meanwhile: retry the engine first
        }
        if st.unfed() {
            return self.feed_piece(st, fd, wait); // the rest of the last batch: no I/O
        }
        let overhead = self.overhead.load(Ordering::Relaxed);
        let tracker = &st.tracker;
        let next_record = if tracker.header_len == 5 {
            tracker.body_left + 5 // the rest of this record and the next one's header
        } else {
            tracker.exact()
        };
        let (size, batch) = match want {
            Want::Exact => (tracker.exact(), None),
            Want::Record => (next_record, None),
            Want::Plain(n) if n < BATCH_MIN => (next_record, None),
            Want::Plain(n) => (n.saturating_add(n / 512 + 64), Some(n)),
        };
        let size = size.clamp(1, RECV_MAX);
        if st.buf.len() < size {
            st.buf.resize(size, 0);
        }
        let flags = if batch.is_some() { libc::MSG_PEEK } else { 0 };
        let n = loop {
            let want_write = self.flush_nowait(fd);
            match sys_recv(fd, &mut st.buf[..size], flags) {
                Ok(n) => break n,
                Err(e) if would_block(e) => self.wait_fd(fd, true, want_write, wait)?,
                Err(e) if e == libc::EINTR => self.check_signals()?,
                // A reset is an EOF without close_notify (the engine reports it), except in
                // the ssl bridge's handshake, where it is ConnectionResetError as with OpenSSL
                // (and after it too on Python 3.13+, see `reset_after_handshake_is_eof`).
                Err(e)
                    if e == libc::ECONNRESET
                        && (self.reset_is_eof
                            || (self.reset_after_handshake_is_eof
                                && self.handshake_done.load(Ordering::Acquire))) =>
                {
                    break 0
                }
                Err(e) => {
                    return Err(IoErr::Os {
                        errno: e,
                        what: "receiving TLS data failed",
                    })
                }
            }
        };
        let n = match batch {
            Some(plain) if n > 0 => {
                // Take only the records the caller will get (the rest stays in the socket).
                let k = plan_batch(&st.tracker, &st.buf[..n], plain, overhead);
                self.discard(fd, &mut st.buf[..k])?;
                k
            }
            _ => n,
        };
        let RecvState { buf, tracker, .. } = &mut *st;
        tracker.advance(&buf[..n]);
        if n == 0 {
            self.received.fetch_add(1, Ordering::AcqRel);
            self.eof_received.store(true, Ordering::Release);
            let fed = self.engine(true, |inner| {
                if inner.eof {
                    return Ok(());
                }
                inner.eof = true;
                inner.session.feed_eof()
            });
            drop(st);
            return match fed {
                Ok(()) => Ok(()),
                Err(IoErr::Tls(f)) => Err(self.fail(f, fd, wait)),
                Err(e) => Err(e),
            };
        }
        st.fed = 0;
        st.end = n;
        self.feed_piece(st, fd, wait)
    }

    /// Give the engine the next piece of the received batch (the caller holds `recv`).
    fn feed_piece(
        &self,
        mut st: MutexGuard<'_, RecvState>,
        fd: c_int,
        wait: Wait,
    ) -> Result<(), IoErr> {
        let start = st.fed;
        let stop = st.end.min(start + FEED_PIECE);
        st.fed = stop;
        self.received.fetch_add(1, Ordering::AcqRel);
        let data = &st.buf[start..stop];
        let fed = self.engine(true, |inner| inner.session.feed(data));
        drop(st);
        match fed {
            Ok(()) => Ok(()),
            Err(IoErr::Tls(f)) => Err(self.fail(f, fd, wait)),
            Err(e) => Err(e),
        }
    }

    /// Whether ciphertext of the last batch still waits to be fed (false if another thread is
    /// receiving: it feeds it).
    fn has_unfed(&self) -> bool {
        self.recv.try_lock().is_some_and(|st| st.unfed())
    }

    /// Remove from the socket the `peeked.len()` bytes just peeked (they are all there: only
    /// the holder of `recv` reads). TCP drops them without copying (`MSG_TRUNC`).
    fn discard(&self, fd: c_int, peeked: &mut [u8]) -> Result<(), IoErr> {
        let tcp = *self.tcp.get_or_init(|| is_tcp(fd));
        let mut done = 0;
        while done < peeked.len() {
            let got = if tcp {
                // SAFETY: with MSG_TRUNC, TCP discards the bytes and never writes the buffer.
                let n = unsafe {
                    libc::recv(
                        fd,
                        std::ptr::null_mut(),
                        peeked.len() - done,
                        libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(errno())
                } else {
                    Ok(n as usize)
                }
            } else {
                sys_recv(fd, &mut peeked[done..], 0)
            };
            match got {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e == libc::EINTR => {}
                Err(e) => {
                    return Err(IoErr::Os {
                        errno: e,
                        what: "receiving TLS data failed",
                    })
                }
            }
        }
        Ok(())
    }

    // -- operations ------------------------------------------------------------------------------

    fn handshake(&self, fd: c_int, wait: Wait) -> Result<(), IoErr> {
        if !self.handshake_done.load(Ordering::Acquire) {
            let _guard = wait.lock(&self.hs, IoErr::WantRead)?;
            while !self.handshake_done.load(Ordering::Acquire) {
                match self.engine(true, |inner| {
                    inner.session.handshake()?;
                    Ok(inner.session.protocol_version())
                }) {
                    Ok(version) => {
                        if version == Some(0x0304) {
                            self.overhead.store(TLS13_OVERHEAD, Ordering::Relaxed);
                        }
                        self.handshake_done.store(true, Ordering::Release);
                    }
                    Err(IoErr::WantRead) => {
                        if self.eof_received.load(Ordering::Acquire) {
                            let f = Failure::HandshakeClosed(
                                "the peer closed the connection during the TLS handshake".into(),
                            );
                            return Err(self.fail(f, fd, wait));
                        }
                        self.flush(fd, wait)?; // the peer needs our flight before it answers
                        self.receive(fd, wait, Want::Record)?;
                    }
                    Err(IoErr::Tls(f)) => return Err(self.fail(f, fd, wait)),
                    Err(e) => return Err(e),
                }
            }
        }
        self.flush(fd, wait)
    }

    /// Plaintext into `buf` (not empty); 0 once the peer's close_notify was read. Returns once
    /// something was read and the received batch is all in the engine (see `RecvState`).
    fn read(&self, fd: c_int, wait: Wait, buf: &mut [u8], want: Want) -> Result<usize, IoErr> {
        if !self.handshake_done.load(Ordering::Acquire) {
            self.handshake(fd, wait)?;
        }
        let mut got = 0;
        loop {
            let target = &mut buf[got..];
            let step = self.engine(true, |inner| {
                let n = inner.session.read(target)?;
                let output =
                    !inner.outgoing.is_empty() || inner.session.pending_outgoing() != Some(0);
                Ok((n, output))
            });
            if got > 0 {
                match step {
                    // The batch's next piece (no I/O), or done.
                    Err(IoErr::WantRead) => {
                        if !self.has_unfed() || self.receive(fd, wait, want).is_err() {
                            return Ok(got);
                        }
                        continue;
                    }
                    // A failure after some bytes were read comes back with the next call
                    // (the engine keeps it).
                    Err(_) => return Ok(got),
                    Ok(_) => {}
                }
            }
            match step {
                Ok((n, output)) => {
                    if output {
                        self.flush_nowait(fd); // e.g. a KeyUpdate answer: never waits
                    }
                    if n == 0 {
                        if got == 0 {
                            self.peer_closed.store(true, Ordering::Release);
                        }
                        return Ok(got);
                    }
                    got += n;
                    if got == buf.len()
                        || !self.has_unfed()
                        || self.receive(fd, wait, want).is_err()
                    {
                        return Ok(got);
                    }
                }
                Err(IoErr::WantRead) => {
                    if self.eof_received.load(Ordering::Acquire) {
                        let f = Failure::Ragged(
                            "the peer closed the connection without a TLS close_notify",
                        );
                        return Err(self.fail(f, fd, wait));
                    }
                    self.receive(fd, wait, want)?;
                }
                Err(IoErr::Tls(f)) => return Err(self.fail(f, fd, wait)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypt and send `data`; returns how much was taken. Takes everything unless the socket
    /// would block past the deadline after something was taken (its ciphertext then waits as
    /// unsent). `WantWrite`/`Timeout` without taking anything while earlier ciphertext is stuck.
    fn write(&self, fd: c_int, wait: Wait, data: &[u8]) -> Result<usize, IoErr> {
        if self.close_sent.load(Ordering::Acquire) {
            return Err(IoErr::Tls(Failure::Usage(
                "cannot write: close_notify was already sent (shutdown)".into(),
            )));
        }
        if !self.handshake_done.load(Ordering::Acquire) {
            self.handshake(fd, wait)?;
        }
        let mut taken = 0;
        {
            let mut st = wait.lock(&self.send, IoErr::WantWrite)?;
            self.send_locked(&mut st, fd, wait)?;
            while taken < data.len() {
                let chunk = &data[taken..data.len().min(taken + WRITE_CHUNK)];
                let n = match self.engine(true, |inner| inner.session.write(chunk)) {
                    Ok(n) => n,
                    Err(IoErr::Tls(f)) => {
                        let _ = self.send_locked(&mut st, fd, Wait::Now);
                        return Err(IoErr::Tls(f));
                    }
                    Err(IoErr::WantRead) => {
                        return Err(IoErr::Tls(Failure::protocol(
                            "the TLS engine wants to read before it writes (renegotiation is \
                             not supported)",
                        )))
                    }
                    Err(e) => return Err(e),
                };
                taken += n;
                match self.send_locked(&mut st, fd, wait) {
                    Ok(sent) => {
                        if n == 0 && sent == 0 {
                            return Err(IoErr::Tls(Failure::protocol(
                                "the TLS engine took no data and produced no output",
                            )));
                        }
                    }
                    Err(IoErr::WantWrite | IoErr::Timeout) if taken > 0 => break,
                    Err(e) => return Err(e),
                }
            }
        }
        if self.flush_wanted.load(Ordering::Acquire) {
            self.flush_nowait(fd);
        }
        Ok(taken)
    }

    fn write_all(&self, fd: c_int, wait: Wait, data: &[u8]) -> Result<(), IoErr> {
        let mut off = 0;
        while off < data.len() {
            off += self.write(fd, wait, &data[off..])?;
        }
        if self.has_unsent() {
            self.flush(fd, wait)?;
        }
        Ok(())
    }

    /// Queue close_notify (once, after a handshake) and send what is queued.
    fn shutdown(&self, fd: c_int, wait: Wait) -> Result<(), IoErr> {
        if !self.close_sent.swap(true, Ordering::AcqRel)
            && self.handshake_done.load(Ordering::Acquire)
        {
            let queued = self.engine(false, |inner| {
                if inner.error.is_none() {
                    inner.session.shutdown();
                }
                Ok(())
            });
            if let Err(IoErr::Tls(f)) = queued {
                return Err(self.fail(f, fd, wait));
            }
        }
        self.flush(fd, wait)
    }

    /// Read and discard until the peer's close_notify or the transport's end.
    fn await_close_notify(&self, fd: c_int, wait: Wait, want: Want) -> Result<(), IoErr> {
        if !self.handshake_done.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut sink = vec![0u8; DISCARD_SIZE];
        while !self.peer_closed.load(Ordering::Acquire) {
            match self.read(fd, wait, &mut sink, want) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(IoErr::Tls(Failure::Ragged(_) | Failure::HandshakeClosed(_))) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Decrypted bytes readable without I/O.
    fn pending(&self) -> usize {
        if !self.handshake_done.load(Ordering::Acquire) {
            return 0;
        }
        self.engine(false, |inner| {
            Ok(if inner.error.is_some() {
                0
            } else {
                inner.session.plaintext_len()
            })
        })
        .unwrap_or(0)
    }

    /// `read` into a `bytes` object of at most `n` bytes.
    fn read_bytes<'py>(
        &self,
        py: Python<'py>,
        fd: c_int,
        wait: Wait,
        n: usize,
        want: Want,
    ) -> Result<Bound<'py, PyBytes>, IoErr> {
        let cap = n.min(RECV_MAX + 64 * 1024);
        let mut own;
        let mut shared = self.scratch.try_lock();
        let buf: &mut Vec<u8> = match shared.as_deref_mut() {
            Some(v) => v,
            None => {
                own = Vec::new();
                &mut own
            }
        };
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let slice = &mut buf[..cap];
        let got = py.detach(|| self.read(fd, wait, slice, want))?;
        Ok(PyBytes::new(py, &buf[..got]))
    }
}

// -- unitls' own TLS sockets ---------------------------------------------------------------------

fn pep_error(e: IoErr, what: &str) -> PyErr {
    match e {
        IoErr::Tls(f) => f.into(),
        IoErr::WantRead => WantReadError::new_err("no TLS data available on the socket yet"),
        IoErr::WantWrite => WantWriteError::new_err("the socket's send buffer is full"),
        IoErr::Timeout => TLSTimeoutError::new_err(format!("the TLS {what} timed out")),
        IoErr::Os { errno, what } => {
            TLSConnectionError::new_err((errno, format!("{what}: {}", strerror(errno))))
        }
        IoErr::Py(e) => e,
        IoErr::Closed => TLSError::new_err("the TLS socket is closed"),
    }
}

/// Spinning before a blocking read, for sockets that sleep elsewhere: the OpenSSL engine's
/// `_ssl` objects wait in their own `poll()`, so the engine calls `readable()` first when
/// OpenSSL holds no plaintext (the same backoff as the native sockets' waits; the budget times
/// `scale`, 1 to 16).
#[pyclass(frozen, module = "unitls._native")]
pub struct SpinWait(Spinner);

#[pymethods]
impl SpinWait {
    #[new]
    #[pyo3(signature = (scale = 1))]
    fn new(scale: u32) -> PyResult<Self> {
        if !(1..=16).contains(&scale) {
            return Err(PyValueError::new_err(format!(
                "scale must be from 1 to 16 (times the spin budget), not {scale}"
            )));
        }
        Ok(SpinWait(Spinner {
            scale,
            ..Spinner::default()
        }))
    }

    /// How many of the next calls return at once without spinning (the backoff after spins
    /// that found nothing).
    #[getter]
    fn skipping(&self) -> u32 {
        self.0.skip.load(Ordering::Relaxed)
    }

    /// Poll `fd` for reading without sleeping, for up to the spin budget (GIL released while
    /// spinning); whether it became readable (false at once while backing off or when spinning
    /// is off). Never consumes anything.
    fn readable(&self, py: Python<'_>, fd: c_int) -> bool {
        if fd < 0 || self.0.skips() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout never sleeps. Data already there: no spin.
        if unsafe { libc::poll(&mut pfd, 1, 0) } != 0 {
            return true;
        }
        // The OpenSSL engine's own waits come back to Python every 50 ms (its `_SLICE`), so a
        // signal that arrives while this spins is handled then.
        py.detach(|| self.0.spin_now(&mut pfd)) == Spin::Ready
    }
}

/// The native core of a unitls `TLSSocket` over any Rust engine's `Connection`.
///
/// `sock` (a connected `socket.socket`) keeps the descriptor; this object never closes it.
/// The socket's timeout at construction becomes this object's (`settimeout` changes only this
/// object's).
#[pyclass(subclass, frozen, module = "unitls._native")]
pub struct SocketCore {
    core: Core,
    sock: Py<PyAny>,
    /// Seconds (None: block; 0: non-blocking).
    timeout: Mutex<Option<f64>>,
}

impl SocketCore {
    fn fd(&self, py: Python<'_>) -> PyResult<c_int> {
        let fd: c_int = self
            .sock
            .bind(py)
            .call_method0(intern!(py, "fileno"))?
            .extract()?;
        if fd < 0 {
            return Err(TLSError::new_err("the TLS socket is closed"));
        }
        Ok(fd)
    }

    /// The descriptor for one I/O call, which counts as in flight until the guard drops
    /// (`_stop_io` waits for it). Taken with the GIL held, as `_stop_io` runs: a call either
    /// starts before the socket is closing, and is waited for, or fails here.
    fn enter(&self, py: Python<'_>) -> PyResult<(c_int, InFlight<'_>)> {
        let fd = self.fd(py)?;
        self.core.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(&self.core.in_flight);
        if self.core.closing.load(Ordering::SeqCst) {
            return Err(TLSError::new_err("the TLS socket is closed"));
        }
        Ok((fd, guard))
    }

    fn wait(&self) -> Wait {
        Wait::from_timeout(*self.timeout.lock())
    }
}

/// One `SocketCore` call in flight (see `SocketCore::enter`).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[pymethods]
impl SocketCore {
    #[new]
    #[pyo3(signature = (connection, sock, *_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        connection: Py<Connection>,
        sock: Py<PyAny>,
        _args: &Bound<'_, PyAny>,
        _kwargs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let timeout: Option<f64> = sock
            .bind(py)
            .call_method0(intern!(py, "gettimeout"))?
            .extract()?;
        Ok(SocketCore {
            core: Core::new(connection, true, true, true, None),
            sock,
            timeout: Mutex::new(timeout),
        })
    }

    /// Complete the handshake (within the timeout).
    fn do_handshake(&self, py: Python<'_>) -> PyResult<()> {
        let (fd, _in_flight) = self.enter(py)?;
        let wait = self.wait();
        py.detach(|| self.core.handshake(fd, wait))
            .map_err(|e| pep_error(e, "handshake"))
    }

    /// Up to `bufsize` bytes of plaintext; `b""` once the peer sent close_notify.
    fn recv<'py>(&self, py: Python<'py>, bufsize: isize) -> PyResult<Bound<'py, PyBytes>> {
        if bufsize < 0 {
            return Err(PyValueError::new_err("negative buffersize in recv"));
        }
        let (fd, _in_flight) = self.enter(py)?;
        if bufsize == 0 {
            return Ok(PyBytes::new(py, b""));
        }
        let n = bufsize as usize;
        self.core
            .read_bytes(py, fd, self.wait(), n, Want::Plain(n))
            .map_err(|e| pep_error(e, "read"))
    }

    /// Plaintext decrypted straight into a writable buffer; returns the count (0 at clean EOF).
    #[pyo3(signature = (buffer, nbytes=0))]
    fn recv_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        nbytes: isize,
    ) -> PyResult<usize> {
        if nbytes < 0 {
            return Err(PyValueError::new_err("negative buffersize in recv_into"));
        }
        let view = ByteView::writable(buffer)?;
        let (fd, _in_flight) = self.enter(py)?;
        let len = if nbytes == 0 {
            view.len()
        } else {
            view.len().min(nbytes as usize)
        };
        if len == 0 {
            return Ok(0);
        }
        let wait = self.wait();
        let target = &mut view.as_mut_slice()[..len];
        py.detach(|| self.core.read(fd, wait, target, Want::Plain(len)))
            .map_err(|e| pep_error(e, "read"))
    }

    /// Encrypt and send; returns how much of `data` was taken.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let view = ByteView::readable(data)?;
        let (fd, _in_flight) = self.enter(py)?;
        let wait = self.wait();
        let bytes = view.as_slice();
        py.detach(|| {
            let n = self.core.write(fd, wait, bytes)?;
            self.core.first_write_done(fd);
            Ok(n)
        })
        .map_err(|e| pep_error(e, "write"))
    }

    /// Send all of `data` within the timeout.
    fn sendall(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let view = ByteView::readable(data)?;
        let (fd, _in_flight) = self.enter(py)?;
        let wait = self.wait();
        let bytes = view.as_slice();
        py.detach(|| {
            self.core.write_all(fd, wait, bytes)?;
            self.core.first_write_done(fd);
            Ok(())
        })
        .map_err(|e| pep_error(e, "write"))
    }

    /// Client connections made by a context: Nagle's algorithm off for the handshake and the
    /// first application write, then on (why: `unitls._socket.no_delay`).
    fn _no_delay_until_first_write(&self, py: Python<'_>) -> PyResult<()> {
        let fd = self.fd(py)?;
        if *self.core.tcp.get_or_init(|| is_tcp(fd)) {
            set_no_delay(fd, true);
            self.core
                .nagle_after_first_write
                .store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Decrypted bytes ready to be read without touching the network.
    fn pending(&self, py: Python<'_>) -> usize {
        py.detach(|| self.core.pending())
    }

    /// Blocking (None), bounded (seconds) or non-blocking (0), as for `socket.socket`.
    fn settimeout(&self, value: Option<f64>) -> PyResult<()> {
        if let Some(v) = value {
            if v.is_nan() || v < 0.0 || !v.is_finite() {
                return Err(PyValueError::new_err("Timeout value out of range"));
            }
        }
        *self.timeout.lock() = value;
        Ok(())
    }

    fn gettimeout(&self) -> Option<f64> {
        *self.timeout.lock()
    }

    fn setblocking(&self, flag: bool) {
        *self.timeout.lock() = if flag { None } else { Some(0.0) };
    }

    /// Queue close_notify and send it within `timeout` seconds (None: block; 0: what the
    /// socket takes now, WantWriteError for the rest, which later calls send).
    fn _send_close_notify(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let (fd, _in_flight) = self.enter(py)?;
        let wait = Wait::from_timeout(timeout);
        py.detach(|| self.core.shutdown(fd, wait))
            .map_err(|e| pep_error(e, "close"))
    }

    /// Read and discard until the peer's close_notify or EOF, for at most `timeout` seconds
    /// (None: block; 0: non-blocking, WantReadError until it arrives).
    fn _await_close_notify(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let (fd, _in_flight) = self.enter(py)?;
        if *self.core.tcp.get_or_init(|| is_tcp(fd)) {
            // Before waiting for the peer's answer: Nagle would hold our close_notify (and the
            // tail of the last record) until the peer's delayed ACK, 40 ms on Linux; setting
            // TCP_NODELAY pushes what is held. (Without a wait, closing or shutting down the
            // socket sends a FIN, which pushes it too.)
            set_no_delay(fd, true);
        }
        let wait = Wait::from_timeout(timeout);
        py.detach(|| {
            self.core
                .await_close_notify(fd, wait, Want::Plain(DISCARD_SIZE))
        })
        .map_err(|e| pep_error(e, "close"))
    }

    /// Called by `close()` just before the socket is closed. Calls of other threads still
    /// inside (blocked in `recv`, or in `sendall` towards a peer that reads nothing) are woken:
    /// the socket is shut down under them, and they end with "the TLS socket is closed", as on
    /// the OpenSSL engine. Returns once they have left (at most `STOP_WAIT`), so that the
    /// descriptor is not closed, and its number reused by another socket, under them.
    fn _stop_io(&self, py: Python<'_>) -> PyResult<()> {
        self.core.closing.store(true, Ordering::SeqCst);
        if self.core.in_flight.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let fd: c_int = self
            .sock
            .bind(py)
            .call_method0(intern!(py, "fileno"))?
            .extract()?;
        if fd >= 0 {
            // SAFETY: shutdown() of a descriptor this socket still owns.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        let until = Instant::now() + STOP_WAIT;
        py.detach(|| {
            while self.core.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Ok(())
    }

    /// Whether the handshake completed.
    #[getter]
    fn handshake_done(&self) -> bool {
        self.core.handshake_done.load(Ordering::Acquire)
    }

    /// The engine's connection object (information methods read it).
    #[getter]
    fn connection(&self, py: Python<'_>) -> Py<Connection> {
        self.core.conn.clone_ref(py)
    }

    /// The plain socket under TLS.
    #[getter]
    fn raw_socket(&self, py: Python<'_>) -> Py<PyAny> {
        self.sock.clone_ref(py)
    }
}

// -- the ssl bridge's _sslobj --------------------------------------------------------------------

pyo3::import_exception!(ssl, SSLWantReadError);
pyo3::import_exception!(ssl, SSLWantWriteError);
pyo3::import_exception!(ssl, SSLZeroReturnError);

/// The `_sslobj` of an `ssl.SSLSocket` in the `ssl` bridge: `_ssl._SSLSocket`'s I/O calls over
/// any Rust engine's `Connection`, raising what `_ssl` raises.
///
/// `sslsock` is the `ssl.SSLSocket` (held weakly: it owns this object); its descriptor and
/// timeout are read at every call, like `_ssl.c` does. `translate(exc, operation)` turns a
/// unitls `TLSError` into the `ssl` exception to raise (only called on failures).
#[pyclass(subclass, frozen, module = "unitls._native")]
pub struct SSLSocketCore {
    /// Holds the `ssl.SSLSocket`'s weak reference (`Core::bridge_socket`).
    core: Core,
    translate: Py<PyAny>,
    /// Plaintext taken by a `write` that then raised SSLWantWriteError (OpenSSL's retry rule).
    write_taken: AtomicUsize,
}

impl SSLSocketCore {
    fn sock<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.core
            .bridge_socket(py)?
            .ok_or_else(|| PyValueError::new_err("the underlying socket has been closed"))
    }

    /// (descriptor, deadline) from the SSLSocket, now.
    fn io(&self, py: Python<'_>) -> PyResult<(c_int, Wait)> {
        let sock = self.sock(py)?;
        let fd: c_int = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if fd < 0 {
            return Err(PyOSError::new_err((libc::EBADF, "Bad file descriptor")));
        }
        let timeout: Option<f64> = sock.call_method0(intern!(py, "gettimeout"))?.extract()?;
        Ok((fd, Wait::from_timeout(timeout)))
    }

    fn error(&self, py: Python<'_>, e: IoErr, operation: &str) -> PyErr {
        match e {
            IoErr::WantRead => SSLWantReadError::new_err((
                2, // SSL_ERROR_WANT_READ
                "The operation did not complete (read)",
            )),
            IoErr::WantWrite => SSLWantWriteError::new_err((
                3, // SSL_ERROR_WANT_WRITE
                "The operation did not complete (write)",
            )),
            IoErr::Timeout => {
                PyTimeoutError::new_err(format!("The {operation} operation timed out"))
            }
            IoErr::Os { errno, .. } => PyOSError::new_err((errno, strerror(errno))),
            IoErr::Py(e) => e,
            IoErr::Closed => PyOSError::new_err((libc::EBADF, strerror(libc::EBADF))),
            IoErr::Tls(f) => {
                let exc: PyErr = f.into();
                let value = exc.value(py);
                match self.translate.bind(py).call1((value, operation)) {
                    Ok(translated) => {
                        let err = PyErr::from_value(translated);
                        err.set_cause(py, Some(exc));
                        err
                    }
                    Err(e) => e,
                }
            }
        }
    }

    /// What `_ssl` reports when the peer has gone while we write after the handshake: up to
    /// Python 3.12 an EOF in violation of protocol, from 3.13 the socket's error.
    fn write_error(&self, py: Python<'_>, e: IoErr) -> PyErr {
        let e = match e {
            IoErr::Os { errno, .. }
                if (errno == libc::ECONNRESET || errno == libc::EPIPE)
                    && self.core.reset_after_handshake_is_eof
                    && self.core.handshake_done.load(Ordering::Acquire) =>
            {
                IoErr::Tls(Failure::Ragged(
                    "the peer closed the connection without a TLS close_notify",
                ))
            }
            other => other,
        };
        self.error(py, e, "write")
    }

    fn eof_result<'py>(&self, py: Python<'py>, into: bool) -> PyResult<Bound<'py, PyAny>> {
        // OpenSSL after the peer's close_notify: empty while our side is open,
        // SSLZeroReturnError once both close_notify alerts have crossed (after unwrap()).
        if self.core.close_sent.load(Ordering::Acquire) {
            return Err(SSLZeroReturnError::new_err((
                6, // SSL_ERROR_ZERO_RETURN
                "TLS/SSL connection has been closed (EOF)",
            )));
        }
        Ok(if into {
            0usize.into_pyobject(py)?.into_any()
        } else {
            PyBytes::new(py, b"").into_any()
        })
    }
}

#[pymethods]
impl SSLSocketCore {
    #[new]
    #[pyo3(signature = (connection, sslsock, translate, *_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        connection: Py<Connection>,
        sslsock: &Bound<'_, PyAny>,
        translate: Py<PyAny>,
        _args: &Bound<'_, PyAny>,
        _kwargs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let weakref = py.import("weakref")?.getattr("ref")?.call1((sslsock,))?;
        let bridge_sock = Some(weakref.unbind());
        Ok(SSLSocketCore {
            core: Core::new(
                connection,
                false,
                py.version_info() < (3, 13),
                false,
                bridge_sock,
            ),
            translate,
            write_taken: AtomicUsize::new(0),
        })
    }

    fn do_handshake(&self, py: Python<'_>) -> PyResult<()> {
        let (fd, wait) = self.io(py)?;
        py.detach(|| self.core.handshake(fd, wait))
            .map_err(|e| self.error(py, e, "handshake"))
    }

    /// Up to `len` bytes of plaintext, or into `buffer` (returns the count), like
    /// `_ssl._SSLSocket.read`.
    #[pyo3(signature = (len=1024, buffer=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        len: isize,
        buffer: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let view = match buffer {
            Some(b) if !b.is_none() => Some(ByteView::writable(b)?),
            _ => None,
        };
        if view.is_none() && len < 0 {
            return Err(PyValueError::new_err("size should not be negative"));
        }
        let n = match &view {
            Some(v) if len <= 0 || len as usize > v.len() => v.len(),
            _ => len.max(0) as usize,
        };
        if n == 0 {
            return Ok(if view.is_some() {
                0usize.into_pyobject(py)?.into_any()
            } else {
                PyBytes::new(py, b"").into_any()
            });
        }
        let (fd, wait) = self.io(py)?;
        if self.core.peer_closed.load(Ordering::Acquire) {
            return self.eof_result(py, view.is_some());
        }
        let got = match &view {
            Some(v) => {
                let target = &mut v.as_mut_slice()[..n];
                py.detach(|| self.core.read(fd, wait, target, Want::Plain(n)))
                    .map(|k| (k, None))
            }
            None => self
                .core
                .read_bytes(py, fd, wait, n, Want::Plain(n))
                .map(|b| (b.as_bytes().len(), Some(b))),
        };
        match got {
            Ok((0, _)) => self.eof_result(py, view.is_some()),
            Ok((k, None)) => Ok(k.into_pyobject(py)?.into_any()),
            Ok((_, Some(b))) => Ok(b.into_any()),
            Err(e) => Err(self.error(py, e, "read")),
        }
    }

    /// Encrypt and send all of `data`; returns its length. A non-blocking socket that cannot
    /// take all the ciphertext raises SSLWantWriteError; the retry (same data) returns the count.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let view = ByteView::readable(data)?;
        let (fd, wait) = self.io(py)?;
        let taken = self.write_taken.load(Ordering::Acquire);
        if taken > 0 {
            py.detach(|| self.core.flush(fd, wait))
                .map_err(|e| self.write_error(py, e))?;
            self.write_taken.store(0, Ordering::Release);
            return Ok(taken);
        }
        let bytes = view.as_slice();
        let n = py
            .detach(|| self.core.write(fd, wait, bytes))
            .map_err(|e| self.write_error(py, e))?;
        if n < bytes.len() || self.core.has_unsent() {
            // Taken (encrypted) but not all sent: OpenSSL's caller retries the same write.
            if n < bytes.len() {
                // Blocked with part of the data not even encrypted: take the rest now, so that
                // the retry only has ciphertext to send.
                let rest = &bytes[n..];
                let more = py.detach(|| -> Result<usize, IoErr> {
                    let mut st = self.core.send.lock();
                    let k = self.core.engine(true, |inner| inner.session.write(rest))?;
                    let _ = self.core.send_locked(&mut st, fd, Wait::Now);
                    Ok(k)
                });
                if let Err(e) = more {
                    return Err(self.write_error(py, e));
                }
            }
            if self.core.has_unsent() {
                self.write_taken.store(bytes.len(), Ordering::Release);
                return Err(self.error(
                    py,
                    if wait.nonblocking() {
                        IoErr::WantWrite
                    } else {
                        IoErr::Timeout
                    },
                    "write",
                ));
            }
        }
        Ok(bytes.len())
    }

    /// Decrypted bytes ready to be read without touching the network.
    fn pending(&self, py: Python<'_>) -> usize {
        py.detach(|| self.core.pending())
    }

    /// Send close_notify, wait for the peer's (SSLWantReadError while it is missing on a
    /// non-blocking socket) and return the socket, like `_ssl._SSLSocket.shutdown`. Records are
    /// read one by one here, so that what the peer sends after its close_notify stays in the
    /// socket for the caller of `unwrap()`.
    fn shutdown<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sock = self.sock(py)?;
        if self.core.handshake_done.load(Ordering::Acquire) {
            let (fd, wait) = self.io(py)?;
            py.detach(|| {
                self.core.shutdown(fd, wait)?;
                self.core.await_close_notify(fd, wait, Want::Exact)
            })
            .map_err(|e| self.error(py, e, "read"))?;
        }
        Ok(sock)
    }

    #[getter]
    fn handshake_done(&self) -> bool {
        self.core.handshake_done.load(Ordering::Acquire)
    }

    #[getter]
    fn connection(&self, py: Python<'_>) -> Py<Connection> {
        self.core.conn.clone_ref(py)
    }
}
