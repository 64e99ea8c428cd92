//! The NSPR I/O layer under each NSS socket: recv/send take from and give to in-memory queues.
//!
//! libssl only calls recv, send, getpeername, getsocketoption, shutdown and close on the layer
//! below it (`nss.md` section 2); read/write/available are given for completeness. `recv` with
//! nothing queued fails with `PR_WOULD_BLOCK_ERROR` (libssl then returns the same error to its
//! caller, which the session maps to `WantRead`), and returns 0 only once the transport reported
//! EOF and every byte was consumed. The layer's `secret` points to the session's `Queues`, which
//! the session owns and frees after `PR_Close`; `close` only frees the descriptor itself.

use std::ffi::{c_int, c_void};

use super::ffi::{
    self, PRFileDesc, PRIOMethods, PRNetAddr, PRSocketOptionData, PRStatus, PR_AF_INET,
    PR_DESC_LAYERED, PR_FAILURE, PR_SOCKOPT_NONBLOCKING, PR_SUCCESS, PR_WOULD_BLOCK_ERROR,
};
use crate::rustls_session::ByteQueue;

/// The ciphertext queues between the session and NSS.
#[derive(Default)]
pub struct Queues {
    /// From the network, not yet read by NSS.
    pub incoming: ByteQueue,
    /// From NSS, for the network.
    pub outgoing: ByteQueue,
    /// The transport reported EOF (after everything in `incoming`).
    pub eof: bool,
    /// Bytes NSS has read so far.
    pub consumed: u64,
    /// The last bytes NSS read (see `plaintext_alert`).
    recent: [u8; 7],
    /// Servers whose client offered 0-RTT data: how many more bytes of application_data
    /// records NSS may read before the handshake completes (see `EARLY_DATA_BUDGET`).
    pub early_budget: Option<usize>,
    /// The budget ran out: the handshake fails.
    pub early_overflow: bool,
    /// Record framing of the bytes read so far (for the budget).
    header: [u8; 5],
    header_fill: usize,
    body_left: usize,
}

/// What a server reads of application_data records during a handshake whose ClientHello offered
/// 0-RTT data. unitls never accepts early data; NSS 3.87 then skips every record it cannot
/// decrypt, without the bound RFC 8446 (4.2.10) sets: max_early_data_size, 16 KiB for OpenSSL
/// and rustls. The budget (whole records, headers included) is those 16 KiB plus 4 KiB for the
/// client's own encrypted flight that follows (a Finished, or a client certificate chain),
/// which NSS reads the same way.
pub const EARLY_DATA_BUDGET: usize = 20 * 1024;

impl Queues {
    /// Count what NSS reads of application_data records (headers included) against the
    /// early-data budget.
    fn charge(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let Some(budget) = self.early_budget else {
                return;
            };
            let n = if self.body_left == 0 {
                let n = (5 - self.header_fill).min(data.len());
                self.header[self.header_fill..self.header_fill + n].copy_from_slice(&data[..n]);
                self.header_fill += n;
                if self.header_fill == 5 {
                    self.header_fill = 0;
                    self.body_left = (self.header[3] as usize) << 8 | self.header[4] as usize;
                }
                n
            } else {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                n
            };
            data = &data[n..];
            if self.header[0] == 23 {
                match budget.checked_sub(n) {
                    Some(rest) => self.early_budget = Some(rest),
                    None => {
                        self.early_overflow = true;
                        return;
                    }
                }
            }
        }
    }

    /// The alert description of a plaintext alert record NSS just read, if it was one. A TLS 1.3
    /// peer that fails before switching its write keys (OpenSSL's client rejecting our
    /// certificate) sends its alert in the clear; NSS refuses such a record as an unexpected
    /// record type without reporting the alert.
    pub fn plaintext_alert(&self) -> Option<u8> {
        let r = &self.recent;
        (self.consumed >= 7 && r[0] == 21 && r[1] == 3 && r[3] == 0 && r[4] == 2).then_some(r[6])
    }

    /// The peer's first bytes cannot start a TLS record (a content type of 20 to 24, then a
    /// 3.x version): it is not speaking TLS. NSS itself would wait for a "record" of whatever
    /// length those bytes spell (`GET ` asks for 8 KiB more).
    pub fn not_tls(&self) -> bool {
        if self.consumed > 0 {
            return false;
        }
        let data = self.incoming.data();
        matches!(data.first(), Some(t) if !(20..=24).contains(t))
            || matches!(data.get(1), Some(major) if *major != 3)
    }
}

/// The queues of a layer descriptor (`None` for model sockets, which do no I/O).
///
/// # Safety
/// `fd` must be one of our layer's descriptors.
unsafe fn queues<'a>(fd: *mut PRFileDesc) -> Option<&'a mut Queues> {
    if fd.is_null() {
        return None;
    }
    ((*fd).secret as *mut Queues).as_mut()
}

fn would_block() -> i32 {
    // SAFETY: sets NSPR's per-thread error.
    unsafe { (ffi::api().PR_SetError)(PR_WOULD_BLOCK_ERROR, 0) };
    -1
}

unsafe extern "C" fn layer_recv(
    fd: *mut PRFileDesc,
    buf: *mut c_void,
    amount: i32,
    _flags: c_int,
    _timeout: u32,
) -> i32 {
    let Some(q) = queues(fd) else {
        return would_block();
    };
    if amount <= 0 {
        return 0;
    }
    let n = q.incoming.len().min(amount as usize);
    if n == 0 {
        return if q.eof { 0 } else { would_block() };
    }
    std::ptr::copy_nonoverlapping(q.incoming.data().as_ptr(), buf as *mut u8, n);
    let taken = &q.incoming.data()[..n];
    let keep = n.min(7);
    q.recent.copy_within(keep.., 0);
    q.recent[7 - keep..].copy_from_slice(&taken[n - keep..]);
    if q.early_budget.is_some() {
        let taken = taken.to_vec();
        q.charge(&taken);
        if q.early_overflow {
            (ffi::api().PR_SetError)(ffi::PR_IO_ERROR, 0);
            return -1;
        }
    }
    q.incoming.consume(n);
    q.consumed += n as u64;
    n as i32
}

unsafe extern "C" fn layer_read(fd: *mut PRFileDesc, buf: *mut c_void, amount: i32) -> i32 {
    layer_recv(fd, buf, amount, 0, 0)
}

unsafe extern "C" fn layer_send(
    fd: *mut PRFileDesc,
    buf: *const c_void,
    amount: i32,
    _flags: c_int,
    _timeout: u32,
) -> i32 {
    let Some(q) = queues(fd) else {
        return would_block();
    };
    if amount <= 0 || buf.is_null() {
        return 0;
    }
    q.outgoing.extend(std::slice::from_raw_parts(
        buf as *const u8,
        amount as usize,
    ));
    amount
}

unsafe extern "C" fn layer_write(fd: *mut PRFileDesc, buf: *const c_void, amount: i32) -> i32 {
    layer_send(fd, buf, amount, 0, 0)
}

unsafe extern "C" fn layer_available(fd: *mut PRFileDesc) -> i32 {
    queues(fd).map_or(0, |q| q.incoming.len().min(i32::MAX as usize) as i32)
}

unsafe extern "C" fn layer_available64(fd: *mut PRFileDesc) -> i64 {
    queues(fd).map_or(0, |q| q.incoming.len() as i64)
}

/// libssl calls the lower layer's shutdown after sending close_notify (without a NULL check):
/// nothing to do, the session decides what EOF means.
unsafe extern "C" fn layer_shutdown(_fd: *mut PRFileDesc, _how: c_int) -> PRStatus {
    PR_SUCCESS
}

/// Frees the descriptor (not the queues: the session owns them).
unsafe extern "C" fn layer_close(fd: *mut PRFileDesc) -> PRStatus {
    if fd.is_null() {
        return PR_FAILURE;
    }
    (*fd).secret = std::ptr::null_mut();
    if let Some(dtor) = (*fd).dtor {
        dtor(fd);
    }
    PR_SUCCESS
}

/// Memory has no address: 0.0.0.0:0 (libssl fails a client handshake if this errors).
unsafe extern "C" fn layer_getname(_fd: *mut PRFileDesc, addr: *mut PRNetAddr) -> PRStatus {
    let Some(a) = addr.as_mut() else {
        return PR_FAILURE;
    };
    std::ptr::write_bytes(addr, 0, 1);
    a.family = PR_AF_INET;
    PR_SUCCESS
}

unsafe extern "C" fn layer_getsockopt(
    _fd: *mut PRFileDesc,
    opt: *mut PRSocketOptionData,
) -> PRStatus {
    let Some(o) = opt.as_mut() else {
        return PR_FAILURE;
    };
    if o.option == PR_SOCKOPT_NONBLOCKING {
        // PRBool non_blocking = PR_TRUE at the start of the value union.
        let p = o.value.as_mut_ptr() as *mut c_int;
        *p = 1;
        return PR_SUCCESS;
    }
    (ffi::api().PR_SetError)(ffi::PR_NOT_IMPLEMENTED_ERROR, 0);
    PR_FAILURE
}

/// NSPR keeps a pointer to the table: it must be static.
static METHODS: PRIOMethods = PRIOMethods {
    file_type: PR_DESC_LAYERED,
    close: Some(layer_close),
    read: Some(layer_read),
    write: Some(layer_write),
    available: Some(layer_available),
    available64: Some(layer_available64),
    fsync: None,
    seek: None,
    seek64: None,
    file_info: None,
    file_info64: None,
    writev: None,
    connect: None,
    accept: None,
    bind: None,
    listen: None,
    shutdown: Some(layer_shutdown),
    recv: Some(layer_recv),
    send: Some(layer_send),
    recvfrom: None,
    sendto: None,
    poll: None,
    acceptread: None,
    transmitfile: None,
    getsockname: Some(layer_getname),
    getpeername: Some(layer_getname),
    reserved_fn_6: None,
    reserved_fn_5: None,
    getsocketoption: Some(layer_getsockopt),
    setsocketoption: None,
    sendfile: None,
    connectcontinue: None,
    reserved_fn_3: None,
    reserved_fn_2: None,
    reserved_fn_1: None,
    reserved_fn_0: None,
};

/// A new layer descriptor whose I/O goes to `queues` (null: a model socket that does no I/O).
/// Returns null if NSPR cannot allocate one.
pub fn new_layer(queues: *mut Queues) -> *mut PRFileDesc {
    let nss = ffi::nss().expect("NSS is loaded before any socket is made");
    // SAFETY: a static method table; NSPR allocates the descriptor.
    let fd = unsafe { (nss.api.PR_CreateIOLayerStub)(nss.layer_identity, &METHODS) };
    if !fd.is_null() {
        // SAFETY: fd was just created and is ours.
        unsafe { (*fd).secret = queues as *mut c_void };
    }
    fd
}
