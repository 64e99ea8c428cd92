//! `NssSession`: one NSS SSL socket over the in-memory layer, as a `TlsSession`.
//!
//! Theory of operation
//! -------------------
//! Each connection owns a heap `Core` (pinned for NSS: the layer's `secret` and every hook's
//! `arg` point to it) and, once started, an SSL socket (`fd`) imported from a model socket of
//! its configuration (models carry options, versions, suites and server certificates; hooks and
//! ALPN are set per connection, so nothing in a model ever points to a connection).
//!
//! - Client: started at construction (`SSL_ResetHandshake(client)` then one `SSL_ForceHandshake`
//!   puts the ClientHello in the outgoing queue).
//! - Server: waits until the queued bytes hold a whole ClientHello (`hello::peek`), then picks
//!   the chain (SNI, else the address-based default) and whether to configure ALPN (only if the
//!   client offers none, or one of ours), imports the socket and starts.
//! - `feed` only queues ciphertext. NSS reads it through the layer's `recv` when driven:
//!   `handshake` (`SSL_ForceHandshake`), `read` (`PR_Read`), `plaintext_len` (a 1-byte
//!   `PR_MSG_PEEK`), `write` (`PR_Write`). An empty queue makes `recv` fail with
//!   `PR_WOULD_BLOCK_ERROR`, which comes back as `WantRead`.
//! - Hooks run synchronously inside those calls, on this thread, and write into `Core`: alerts
//!   received (close_notify tells a clean close from a ragged EOF:
//!   NSS's `PR_Read` returns 0 for both), our verifier's rejection (for the error's reason), a
//!   panic (re-raised after the NSS call returns, so it reaches the generic panic boundary
//!   instead of unwinding through C).
//! - Failures are mapped after each NSS call from `PR_GetError` plus what the hooks recorded.
//!
//! Session resumption: clients keep their sessions in unitls' cache (`crate::resumption`,
//! keyed by name and port, one per configuration), not in NSS's process-wide client cache
//! (keyed by peer address and name): NSS hands each session over as a resumption token
//! (`SSL_SetResumptionTokenCallback`, which also keeps it out of NSS's cache), and a new
//! connection gets one with `SSL_SetResumptionToken` (after `SSL_ResetHandshake`, which would
//! drop it). Servers resume TLS 1.3 tickets only: NSS's session-ID cache and its ticket key are
//! process-wide, so TLS 1.2 resumption is off (`SSL_NO_CACHE`, no RFC 5077 tickets), and TLS 1.3
//! tickets carry a token naming the server context and the 6-hour period (`ServerShared::
//! ticket_tokens`; `SSL_SendSessionTicket`, just before the server's first application data).
//! A ticket of another context or an older period (seen by the `SSL_HelloRetryRequestCallback`
//! on the first ClientHello) is declined softly: a HelloRetryRequest, and for the second
//! ClientHello the socket's clock (`SSL_SetTimeFunc`) runs far ahead so the ticket reads as
//! expired and the handshake is a full one. Servers without tickets keep that clock running
//! ahead for every handshake, so they never resume.
//!
//! Key logging: Debian's NSS ignores SSLKEYLOGFILE, so the experimental `SSL_SecretCallback`
//! hands each TLS 1.3 traffic secret (a `PK11SymKey`, read out with `PK11_ExtractKeyValue`) to
//! `crate::keylog`, with the client random taken from the ClientHello on the wire. NSS has no
//! call for the exporter secret (no `EXPORTER_SECRET` line) nor for a TLS 1.2 master secret
//! (the configuration refuses key logging with TLS 1.2 allowed).

use std::ffi::{c_int, c_uint, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use rustls::AlertDescription;

use super::config::{ClientIdentity, ClientShared, ServerShared};
use super::ffi::{self, *};
use super::hello::{self, Peek};
use super::io::{new_layer, Queues, EARLY_DATA_BUDGET};
use super::pki::{self, Policy, Rejection};
use crate::errors::{alert_name, is_certificate_alert, Failure};
use crate::keylog::KeyLogFile;
use crate::resumption::{AnyBag, TokenBag, TokenCache};
use crate::session::TlsSession;

const RAGGED: &str = "EOF occurred in violation of protocol: the peer closed the transport \
                      without a TLS close_notify";

/// Largest single NSPR I/O call.
const MAX_IO: usize = 1 << 30;

/// State the hooks write, pinned on the heap for the life of the socket.
struct Core {
    io: Queues,
    is_server: bool,
    /// `None`: accept any certificate (or none is ever expected).
    policy: Option<Policy>,
    /// The client certificate and key to offer when asked.
    client_auth: Option<Arc<ClientIdentity>>,
    /// The token this server's tickets carry now, and the previous period's (servers with
    /// tickets; see `ServerShared::ticket_tokens`).
    ticket_token: Option<[u8; 32]>,
    previous_token: Option<[u8; 32]>,
    /// Client side: where the sessions NSS hands over go.
    tokens: Option<Tokens>,
    /// Where TLS 1.3 secrets are logged, and the connection's client random (from the wire).
    keylog: Option<Arc<KeyLogFile>>,
    client_random: Option<[u8; 32]>,
    /// The socket's clock runs far ahead: tickets read as expired.
    expire_tickets: bool,
    close_notify: bool,
    /// The last fatal alert received.
    alert: Option<u8>,
    /// Why our verifier refused the peer's certificate.
    rejection: Option<Rejection>,
    panic: Option<String>,
}

/// A client connection's sessions: its own bag, listed in the configuration's cache (if on).
struct Tokens {
    bag: Arc<TokenBag>,
    cache: Option<Arc<TokenCache>>,
}

/// The client random of a ClientHello record at the start of `data` (bytes 11..43).
fn client_random_of(data: &[u8]) -> Option<[u8; 32]> {
    if data.len() < 43 || data[0] != 0x16 || data[5] != 0x01 {
        return None;
    }
    data[11..43].try_into().ok()
}

/// The protocol version NSS negotiated so far (`SSL_GetPreliminaryChannelInfo`).
unsafe fn preliminary_version(fd: *mut PRFileDesc) -> Option<u16> {
    let mut info = [0u32; PRELIMINARY_INFO_PREFIX / 4];
    let rv = (ffi::api().SSL_GetPreliminaryChannelInfo)(
        fd,
        info.as_mut_ptr() as *mut c_void,
        PRELIMINARY_INFO_PREFIX as c_uint,
    );
    if rv != SEC_SUCCESS || info[1] & SSL_PREINFO_VERSION == 0 {
        return None;
    }
    let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let at = PRELIMINARY_INFO_VERSION_AT;
    Some(u16::from_ne_bytes([bytes[at], bytes[at + 1]]))
}

/// Client side: NSS hands over a session (TLS 1.2 at the end of the handshake, each TLS 1.3
/// ticket when it arrives) as a token, which it frees after the call.
unsafe extern "C" fn resumption_token(
    fd: *mut PRFileDesc,
    token: *const u8,
    len: c_uint,
    arg: *mut c_void,
) -> SECStatus {
    hook(arg, SEC_SUCCESS, |core| {
        let Some(tokens) = &core.tokens else {
            return SEC_SUCCESS;
        };
        if token.is_null() || len == 0 {
            return SEC_SUCCESS;
        }
        let bytes = std::slice::from_raw_parts(token, len as usize).to_vec();
        if preliminary_version(fd) == Some(TLS13) {
            tokens.bag.push_tls13(bytes);
        } else {
            tokens.bag.set_tls12(bytes);
        }
        if let Some(cache) = &tokens.cache {
            cache.remember(&tokens.bag);
        }
        SEC_SUCCESS
    })
}

/// A TLS 1.3 traffic secret (epoch 1: early data, 2: handshake, 3: the first application
/// secrets; later epochs are key updates, which Wireshark derives itself) for the key log.
unsafe extern "C" fn log_secret(
    _fd: *mut PRFileDesc,
    epoch: u16,
    direction: c_int,
    secret: *mut c_void,
    arg: *mut c_void,
) {
    hook(arg, (), |core| {
        let (Some(log), Some(random)) = (&core.keylog, core.client_random) else {
            return;
        };
        // A client writes with the client's secrets, a server reads with them.
        let client = (direction == SSL_SECRET_WRITE) != core.is_server;
        let who = if client { "CLIENT" } else { "SERVER" };
        let label = match epoch {
            1 if client => "CLIENT_EARLY_TRAFFIC_SECRET".to_string(),
            2 => format!("{who}_HANDSHAKE_TRAFFIC_SECRET"),
            3 => format!("{who}_TRAFFIC_SECRET_0"),
            _ => return,
        };
        let api = ffi::api();
        if secret.is_null() || (api.PK11_ExtractKeyValue)(secret) != SEC_SUCCESS {
            return; // a key NSS will not export (FIPS mode): no line
        }
        let item = (api.PK11_GetKeyData)(secret);
        if let Some(item) = item.as_ref().filter(|i| !i.data.is_null()) {
            let bytes = std::slice::from_raw_parts(item.data, item.len as usize);
            log.write(&label, &random, bytes);
        }
    })
}

/// Run a hook body; a panic is recorded (and re-raised once NSS returns) instead of unwinding
/// into C.
unsafe fn hook<R>(arg: *mut c_void, fallback: R, f: impl FnOnce(&mut Core) -> R) -> R {
    let Some(core) = (arg as *mut Core).as_mut() else {
        return fallback;
    };
    match catch_unwind(AssertUnwindSafe(|| f(&mut *core))) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            core.panic.get_or_insert(what);
            fallback
        }
    }
}

unsafe extern "C" fn auth_certificate_hook(
    arg: *mut c_void,
    fd: *mut PRFileDesc,
    _check_sig: PRBool,
    _is_server: PRBool,
) -> SECStatus {
    hook(arg, SEC_FAILURE, |core| {
        let Some(policy) = &core.policy else {
            return SEC_SUCCESS;
        };
        match pki::verify_peer(fd, policy) {
            Ok(()) => SEC_SUCCESS,
            Err(rejection) => {
                // The error code picks the alert NSS sends (unknown_ca, certificate_expired...).
                (ffi::api().PR_SetError)(rejection.code, 0);
                core.rejection = Some(rejection);
                SEC_FAILURE
            }
        }
    })
}

unsafe extern "C" fn client_auth_hook(
    arg: *mut c_void,
    _fd: *mut PRFileDesc,
    _ca_names: *mut c_void,
    cert: *mut *mut CERTCertificate,
    key: *mut *mut SECKEYPrivateKey,
) -> SECStatus {
    hook(arg, SEC_FAILURE, |core| match &core.client_auth {
        Some(id) if !cert.is_null() && !key.is_null() => {
            // NSS takes ownership of both references.
            *cert = id.cert.dup();
            *key = id.key.copy();
            SEC_SUCCESS
        }
        _ => SEC_FAILURE,
    })
}

unsafe extern "C" fn alert_received(
    _fd: *const PRFileDesc,
    arg: *mut c_void,
    alert: *const SSLAlert,
) {
    hook(arg, (), |core| {
        let Some(alert) = alert.as_ref() else {
            return;
        };
        match alert.description {
            0 => core.close_notify = true,
            // user_canceled and no_renegotiation are warnings.
            90 | 100 if alert.level != 2 => {}
            d => core.alert = Some(d),
        }
    })
}

/// Servers with tickets: notice a ticket of another configuration in the first ClientHello and
/// decline it (see the module docs).
unsafe extern "C" fn hello_retry_callback(
    first_hello: PRBool,
    token: *const u8,
    token_len: c_uint,
    _retry_token: *mut u8,
    _retry_token_len: *mut c_uint,
    _retry_token_max: c_uint,
    arg: *mut c_void,
) -> c_int {
    hook(arg, SSL_HELLO_RETRY_ACCEPT, |core| {
        if first_hello == PR_FALSE || token_len == 0 || token.is_null() {
            return SSL_HELLO_RETRY_ACCEPT;
        }
        let offered = std::slice::from_raw_parts(token, token_len as usize);
        let ours = [core.ticket_token, core.previous_token];
        if ours.iter().flatten().any(|t| &t[..] == offered) {
            return SSL_HELLO_RETRY_ACCEPT;
        }
        core.expire_tickets = true;
        SSL_HELLO_RETRY_REQUEST
    })
}

/// Far enough ahead that every ticket reads as expired, far enough from overflow for NSS's
/// arithmetic.
const FAR_FUTURE: PRTime = i64::MAX / 4;

unsafe extern "C" fn socket_clock(arg: *mut c_void) -> PRTime {
    let ahead = hook(arg, false, |core| core.expire_tickets);
    if ahead {
        FAR_FUTURE
    } else {
        (ffi::api().PR_Now)()
    }
}

/// What keeps a connection's configuration alive (models, anchors, identity), and for a server
/// not yet started, the chain for clients that send no SNI name.
enum Config {
    Client {
        _keep: Arc<ClientShared>,
    },
    Server {
        shared: Arc<ServerShared>,
        default_chain: usize,
    },
}

pub struct NssSession {
    /// The SSL socket; null until a server has seen the ClientHello.
    fd: *mut PRFileDesc,
    /// Owned (from `Box::into_raw`); freed after the socket is closed.
    core: *mut Core,
    config: Config,
    done: bool,
    shut_down: bool,
    /// A failure met after some plaintext was returned: the next read returns it.
    pending: Option<Failure>,
    /// Server side: the SNI name the client sent.
    server_name: Option<String>,
    /// A TLS 1.3 server owes the client a ticket (`send_ticket`).
    ticket_due: bool,
}

// SAFETY: the socket and its core are only used by the thread holding the Connection's lock;
// NSS sockets are not bound to threads.
unsafe impl Send for NssSession {}

fn setup_err(what: &str) -> Failure {
    Failure::Generic(format!(
        "NSS could not set up the connection: {what} failed ({})",
        pki::describe(ffi::last_error())
    ))
}

fn check(rv: SECStatus, what: &str) -> Result<(), Failure> {
    if rv == SEC_SUCCESS {
        Ok(())
    } else {
        Err(setup_err(what))
    }
}

/// Record-layer errors that mean the bytes were not TLS at all.
fn not_tls(code: PRErrorCode) -> bool {
    matches!(
        code,
        SSL_ERROR_RX_RECORD_TOO_LONG | SSL_ERROR_RX_UNKNOWN_RECORD_TYPE
    )
}

impl NssSession {
    fn new(core: Core, config: Config) -> Self {
        NssSession {
            fd: std::ptr::null_mut(),
            core: Box::into_raw(Box::new(core)),
            config,
            done: false,
            shut_down: false,
            pending: None,
            server_name: None,
            ticket_due: false,
        }
    }

    fn blank_core(is_server: bool, policy: Option<Policy>) -> Core {
        Core {
            io: Queues::default(),
            is_server,
            policy,
            client_auth: None,
            ticket_token: None,
            previous_token: None,
            tokens: None,
            keylog: None,
            client_random: None,
            expire_tickets: false,
            close_notify: false,
            alert: None,
            rejection: None,
            panic: None,
        }
    }

    /// A client connection to `host` (SNI, unless an IP literal, and the session cache key);
    /// `policy`: how to verify the server (`None`: accept any certificate).
    /// `bag` receives the sessions NSS hands over; `offered` is a session to resume instead
    /// of one from the configuration's cache.
    pub fn client(
        shared: Arc<ClientShared>,
        host: &str,
        policy: Option<Policy>,
        bag: Arc<TokenBag>,
        offered: Option<Arc<TokenBag>>,
    ) -> Result<Self, Failure> {
        let mut core = Self::blank_core(false, policy);
        core.client_auth = shared.identity.clone();
        core.keylog = shared.keylog.clone();
        let taken = match (&offered, &shared.cache) {
            (Some(offered), _) => offered.take_any(),
            (None, Some(cache)) => cache.take_any(bag.key()),
            (None, None) => None,
        };
        if let Some((token, false)) = &taken {
            // NSS hands over no new token when it resumes a TLS 1.2 session: this connection's
            // session is then the one it resumed (replaced if NSS hands over another).
            bag.set_tls12(token.clone());
        }
        core.tokens = Some(Tokens {
            bag,
            cache: shared.cache.clone(),
        });
        let mut session = Self::new(
            core,
            Config::Client {
                _keep: shared.clone(),
            },
        );
        session.import(shared.model())?;
        let api = ffi::api();
        let fd = session.fd;
        let host_c = CString::new(host)
            .map_err(|_| Failure::Config(format!("invalid server name {host:?}")))?;
        // SAFETY: fd is our fresh socket; NSS copies the strings and the ALPN list.
        unsafe {
            if (api.SSL_SetURL)(fd, host_c.as_ptr()) != 0 {
                return Err(setup_err("SSL_SetURL"));
            }
            if !shared.alpn_wire.is_empty() {
                check(
                    (api.SSL_SetNextProtoNego)(
                        fd,
                        shared.alpn_wire.as_ptr(),
                        shared.alpn_wire.len() as c_uint,
                    ),
                    "SSL_SetNextProtoNego",
                )?;
            }
            check((api.SSL_ResetHandshake)(fd, PR_FALSE), "SSL_ResetHandshake")?;
            if let (Some((token, _)), Some(set_token)) = (
                taken,
                ffi::nss().ok().and_then(|n| n.exp.set_resumption_token),
            ) {
                // NSS refuses a token it cannot use (expired, another version): a full handshake.
                let _ = set_token(fd, token.as_ptr(), token.len() as c_uint);
            }
        }
        // The ClientHello is ready for the network right away, as with the other engines.
        let started = session.handshake();
        let random = client_random_of(session.core().io.outgoing.data());
        session.core_mut().client_random = random;
        match started {
            Ok(()) | Err(Failure::WantRead(_)) => Ok(session),
            Err(e) => Err(e),
        }
    }

    /// A server connection; its socket is made once the ClientHello is in.
    pub fn server(shared: Arc<ServerShared>, default_chain: usize, policy: Option<Policy>) -> Self {
        let mut core = Self::blank_core(true, policy);
        core.keylog = shared.keylog.clone();
        if let Some((current, previous)) = shared.ticket_tokens() {
            core.ticket_token = Some(current);
            core.previous_token = Some(previous);
        }
        // Without tickets of its own, a server's clock runs ahead: every ticket reads as expired.
        core.expire_tickets = core.ticket_token.is_none();
        Self::new(
            core,
            Config::Server {
                shared,
                default_chain,
            },
        )
    }

    fn core(&self) -> &Core {
        // SAFETY: the core lives as long as the session; hooks only write to it inside NSS calls
        // made through `&mut self`, never while this borrow is alive.
        unsafe { &*self.core }
    }

    fn core_mut(&mut self) -> &mut Core {
        // SAFETY: as in `core`.
        unsafe { &mut *self.core }
    }

    /// A panic in a hook, re-raised now that NSS has returned (the Connection's boundary turns
    /// it into a TLSError).
    fn reraise(&mut self) {
        if let Some(what) = self.core_mut().panic.take() {
            panic!("{what}");
        }
    }

    /// Create the SSL socket from `model` over a new memory layer, and install the hooks.
    fn import(&mut self, model: *mut PRFileDesc) -> Result<(), Failure> {
        let api = ffi::api();
        // SAFETY: the queues live in the pinned core; the layer is ours until imported.
        unsafe {
            let layer = new_layer(&mut (*self.core).io);
            if layer.is_null() {
                return Err(setup_err("PR_CreateIOLayerStub"));
            }
            let fd = (api.SSL_ImportFD)(model, layer);
            if fd.is_null() {
                let err = setup_err("SSL_ImportFD");
                (api.PR_Close)(layer);
                return Err(err);
            }
            self.fd = fd;
        }
        self.install_hooks()
    }

    fn install_hooks(&mut self) -> Result<(), Failure> {
        let nss = ffi::nss().map_err(Failure::Config)?;
        let (api, fd, arg) = (&nss.api, self.fd, self.core as *mut c_void);
        let core = self.core();
        let (is_server, tickets) = (core.is_server, core.ticket_token.is_some());
        // SAFETY: `arg` (the core) outlives the socket: it is freed after PR_Close.
        unsafe {
            check(
                (api.SSL_AuthCertificateHook)(fd, Some(auth_certificate_hook), arg),
                "SSL_AuthCertificateHook",
            )?;
            check(
                (api.SSL_AlertReceivedCallback)(fd, Some(alert_received), arg),
                "SSL_AlertReceivedCallback",
            )?;
            if core.keylog.is_some() {
                let Some(set_secret) = nss.exp.secret_callback else {
                    return Err(Failure::Config("this NSS lacks SSL_SecretCallback".into()));
                };
                check(set_secret(fd, Some(log_secret), arg), "SSL_SecretCallback")?;
            }
            if !is_server {
                if core.tokens.is_some() {
                    let Some(set_cb) = nss.exp.set_resumption_token_callback else {
                        return Err(Failure::Config(
                            "this NSS lacks SSL_SetResumptionTokenCallback".into(),
                        ));
                    };
                    check(
                        set_cb(fd, Some(resumption_token), arg),
                        "SSL_SetResumptionTokenCallback",
                    )?;
                }
                return check(
                    (api.SSL_GetClientAuthDataHook)(fd, Some(client_auth_hook), arg),
                    "SSL_GetClientAuthDataHook",
                );
            }
            let (Some(set_clock), Some(set_hrr)) =
                (nss.exp.set_time_func, nss.exp.hello_retry_request_callback)
            else {
                return Err(Failure::Config(
                    "this NSS lacks SSL_SetTimeFunc or SSL_HelloRetryRequestCallback, which the \
                     nss engine's servers need"
                        .into(),
                ));
            };
            check(set_clock(fd, Some(socket_clock), arg), "SSL_SetTimeFunc")?;
            if tickets {
                check(
                    set_hrr(fd, Some(hello_retry_callback), arg),
                    "SSL_HelloRetryRequestCallback",
                )?;
            }
        }
        Ok(())
    }

    /// Server side: make the socket once a whole ClientHello is queued.
    fn start_server(&mut self) -> Result<(), Failure> {
        let Config::Server {
            shared,
            default_chain,
        } = &self.config
        else {
            return Err(Failure::Internal("no NSS socket".into()));
        };
        let (shared, default_chain) = (shared.clone(), *default_chain);
        let (name, offered, early_data) = match hello::peek(self.core().io.incoming.data()) {
            Peek::Incomplete if self.core().io.eof => {
                return Err(Failure::HandshakeClosed(
                    "the peer closed the connection before the TLS handshake completed".into(),
                ))
            }
            Peek::Incomplete => {
                return Err(Failure::WantRead(
                    "the TLS handshake needs more data from the peer",
                ))
            }
            Peek::Hello {
                server_name,
                alpn,
                early_data,
            } => (server_name, alpn, early_data),
            Peek::NotAHello => (None, None, false),
        };
        if early_data {
            self.core_mut().io.early_budget = Some(EARLY_DATA_BUDGET);
        }
        let chain = name
            .as_deref()
            .and_then(|n| shared.chain_for_name(n))
            .unwrap_or(default_chain);
        // ALPN only if the client offers none or one of ours: otherwise the handshake completes
        // without ALPN (as with OpenSSL) instead of failing with no_application_protocol.
        let use_alpn = !shared.alpn.is_empty()
            && offered
                .as_ref()
                .is_none_or(|o| o.iter().any(|p| shared.alpn.contains(p)));
        self.server_name = name;
        let random = client_random_of(self.core().io.incoming.data());
        self.core_mut().client_random = random;
        self.import(shared.chains[chain].model())?;
        let api = ffi::api();
        let fd = self.fd;
        // SAFETY: our fresh socket; NSS copies the ALPN list.
        unsafe {
            if use_alpn {
                check(
                    (api.SSL_SetNextProtoNego)(
                        fd,
                        shared.alpn_wire.as_ptr(),
                        shared.alpn_wire.len() as c_uint,
                    ),
                    "SSL_SetNextProtoNego",
                )?;
            }
            check((api.SSL_ResetHandshake)(fd, PR_TRUE), "SSL_ResetHandshake")
        }
    }

    /// The peer is not speaking TLS: answer with a fatal unexpected_message alert (in the clear,
    /// as nothing was negotiated) and fail.
    fn refuse_non_tls(&mut self) -> Failure {
        let io = &mut self.core_mut().io;
        let first = io
            .incoming
            .data()
            .iter()
            .take(8)
            .copied()
            .collect::<Vec<u8>>();
        io.incoming.clear();
        io.outgoing
            .extend(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0A]);
        Failure::protocol(format!(
            "TLS protocol error: the peer's first bytes ({}) are not a TLS record (is the peer \
             speaking TLS?)",
            String::from_utf8_lossy(&first).escape_debug()
        ))
    }

    /// The handshake just completed: a TLS 1.3 server with tickets owes the client one.
    fn completed(&mut self) {
        self.done = true;
        let core = self.core_mut();
        core.io.early_budget = None;
        if core.is_server && core.ticket_token.is_some() {
            core.expire_tickets = false; // the ticket's timestamp is read from the socket's clock
            self.ticket_due = self.protocol_version() == Some(TLS13);
        }
    }

    /// Hand out the ticket owed, just before the server's first application data: a ticket
    /// sent on its own right after the handshake races the client's close (a client that
    /// closes with it unread makes its kernel reset the connection), and clients read the
    /// ticket with the data that follows it.
    fn send_ticket(&mut self) {
        self.ticket_due = false;
        let Some(token) = self.core().ticket_token else {
            return;
        };
        if let Some(send) = ffi::nss().ok().and_then(|nss| nss.exp.send_session_ticket) {
            // SAFETY: a finished TLS 1.3 server socket; NSS copies the token. A failure only
            // means no resumption later.
            unsafe { send(self.fd, token.as_ptr(), token.len() as c_uint) };
        }
    }

    /// The failure for NSS error `code` (read right after the failing call).
    fn failure(&mut self, code: PRErrorCode, handshaking: bool) -> Failure {
        let is_server = self.core().is_server;
        if code == PR_WOULD_BLOCK_ERROR {
            return Failure::WantRead(if handshaking {
                "the TLS handshake needs more data from the peer"
            } else {
                "no application data available yet"
            });
        }
        let nss_says = pki::describe(code);
        let core = self.core_mut();
        if core.io.early_overflow {
            return Failure::Protocol {
                message: format!(
                    "TLS protocol error: the client sent more than {} KiB of 0-RTT data, which \
                     the server does not accept (RFC 8446 4.2.10)",
                    EARLY_DATA_BUDGET / 1024 - 4
                ),
                alert: None,
            };
        }
        if let Some(rejection) = &core.rejection {
            let reason = rejection.reason.clone();
            return Failure::Certificate {
                message: format!(
                    "certificate verification failed: {reason} ({})",
                    pki::describe(rejection.code)
                ),
                reason,
                alert: None,
            };
        }
        if code == SSL_ERROR_RX_UNEXPECTED_RECORD_TYPE && core.alert.is_none() {
            core.alert = core.io.plaintext_alert().filter(|d| *d != 0);
        }
        if let Some(alert) = core.alert {
            let name = alert_name(AlertDescription::from(alert));
            if is_certificate_alert(AlertDescription::from(alert)) {
                return Failure::Certificate {
                    reason: format!("peer rejected our certificate: {name}"),
                    message: format!(
                        "the peer rejected our certificate (it sent the alert {name}; \
                         {nss_says})"
                    ),
                    alert: Some(name),
                };
            }
            return Failure::Protocol {
                message: format!("peer sent fatal alert {name} ({nss_says})"),
                alert: Some(name),
            };
        }
        if handshaking
            && (code == PR_END_OF_FILE_ERROR
                || code == SSL_ERROR_CLOSE_NOTIFY_ALERT
                || core.close_notify)
        {
            return Failure::HandshakeClosed(format!(
                "the peer closed the connection before the TLS handshake completed ({nss_says})"
            ));
        }
        if is_server && code == SSL_ERROR_NO_CERTIFICATE {
            let reason = "peer sent no certificate but one is required".to_string();
            return Failure::Certificate {
                message: format!("certificate verification failed: {reason} ({nss_says})"),
                reason,
                alert: None,
            };
        }
        if not_tls(code) {
            return Failure::protocol(format!(
                "TLS protocol error: {nss_says} (is the peer speaking TLS?)"
            ));
        }
        Failure::protocol(format!("TLS protocol error: {nss_says}"))
    }

    /// `SSL_GetChannelInfo` as raw bytes (NSS 3.87's layout), once the handshake is complete.
    fn channel_info(&self) -> Option<[u8; CHANNEL_INFO_LEN]> {
        if !self.done || self.fd.is_null() {
            return None;
        }
        let mut buf = [0u64; CHANNEL_INFO_LEN / 8];
        // SAFETY: a buffer of exactly the size we pass.
        let rv = unsafe {
            (ffi::api().SSL_GetChannelInfo)(
                self.fd,
                buf.as_mut_ptr() as *mut c_void,
                CHANNEL_INFO_LEN as c_uint,
            )
        };
        if rv != SEC_SUCCESS {
            return None;
        }
        let mut out = [0u8; CHANNEL_INFO_LEN];
        for (chunk, word) in out.chunks_exact_mut(8).zip(buf) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        Some(out)
    }
}

fn u16_at(info: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([info[at], info[at + 1]])
}

fn u32_at(info: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]])
}

impl Drop for NssSession {
    fn drop(&mut self) {
        // SAFETY: closing the socket frees it and our layer; the core (which the layer and the
        // hooks point to) is freed after that.
        unsafe {
            if !self.fd.is_null() {
                (ffi::api().PR_Close)(self.fd);
            }
            drop(Box::from_raw(self.core));
        }
    }
}

impl TlsSession for NssSession {
    fn feed(&mut self, data: &[u8]) -> Result<(), Failure> {
        self.core_mut().io.incoming.extend(data);
        Ok(())
    }

    fn feed_eof(&mut self) -> Result<(), Failure> {
        self.core_mut().io.eof = true;
        Ok(())
    }

    fn incoming_len(&self) -> usize {
        self.core().io.incoming.len()
    }

    fn drain_outgoing(&mut self, out: &mut Vec<u8>) {
        let q = &mut self.core_mut().io.outgoing;
        out.extend_from_slice(q.data());
        q.clear();
    }

    fn pending_outgoing(&mut self) -> Option<usize> {
        Some(self.core().io.outgoing.len())
    }

    fn take_outgoing(&mut self, out: &mut crate::buffers::RawSink) {
        let q = &mut self.core_mut().io.outgoing;
        let n = std::io::Write::write(out, q.data()).unwrap_or(0);
        q.consume(n);
    }

    fn handshake(&mut self) -> Result<(), Failure> {
        if self.done {
            return Ok(());
        }
        if self.core().io.not_tls() {
            return Err(self.refuse_non_tls());
        }
        if self.fd.is_null() {
            self.start_server()?;
        }
        // SAFETY: our socket.
        let rv = unsafe { (ffi::api().SSL_ForceHandshake)(self.fd) };
        let code = if rv == SEC_SUCCESS {
            0
        } else {
            ffi::last_error()
        };
        self.reraise();
        if rv == SEC_SUCCESS {
            self.completed();
            return Ok(());
        }
        Err(self.failure(code, true))
    }

    fn is_handshaking(&self) -> bool {
        !self.done
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        if let Some(f) = self.pending.take() {
            return Err(f);
        }
        self.handshake()?;
        let api = ffi::api();
        let mut got = 0;
        while got < buf.len() {
            let want = (buf.len() - got).min(MAX_IO);
            // SAFETY: `want` writable bytes at buf[got..].
            let n = unsafe {
                (api.PR_Read)(self.fd, buf[got..].as_mut_ptr() as *mut c_void, want as i32)
            };
            let code = if n < 0 { ffi::last_error() } else { 0 };
            self.reraise();
            if n > 0 {
                got += n as usize;
                continue;
            }
            if n == 0 {
                if got > 0 {
                    break; // the EOF comes back on the next call
                }
                return if self.core().close_notify {
                    Ok(0)
                } else {
                    Err(Failure::Ragged(RAGGED))
                };
            }
            if code == PR_WOULD_BLOCK_ERROR {
                break;
            }
            let failure = self.failure(code, false);
            if got == 0 {
                return Err(failure);
            }
            self.pending = Some(failure);
            break;
        }
        if got == 0 {
            return Err(Failure::WantRead("no application data available yet"));
        }
        Ok(got)
    }

    fn plaintext_len(&mut self) -> usize {
        if !self.done || self.pending.is_some() {
            return 0;
        }
        let api = ffi::api();
        // SAFETY: our socket; the peek reads at most one byte into `probe`.
        unsafe {
            let pending = (api.SSL_DataPending)(self.fd);
            if pending > 0 || self.core().io.incoming.is_empty() {
                return pending.max(0) as usize;
            }
            // Decrypt the next record without consuming it.
            let mut probe = 0u8;
            let n = (api.PR_Recv)(
                self.fd,
                &mut probe as *mut u8 as *mut c_void,
                1,
                PR_MSG_PEEK,
                PR_INTERVAL_NO_WAIT,
            );
            let code = if n < 0 { ffi::last_error() } else { 0 };
            self.reraise();
            if n < 0 && code != PR_WOULD_BLOCK_ERROR {
                self.pending = Some(self.failure(code, false));
                return 0;
            }
            (api.SSL_DataPending)(self.fd).max(0) as usize
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, Failure> {
        if self.shut_down {
            return Err(Failure::Usage(
                "the TLS connection is shut down (close_notify sent): no more data can be sent"
                    .into(),
            ));
        }
        self.handshake()?;
        if self.ticket_due && !data.is_empty() {
            self.send_ticket();
        }
        let api = ffi::api();
        let mut sent = 0;
        while sent < data.len() {
            let chunk = (data.len() - sent).min(MAX_IO);
            // SAFETY: `chunk` readable bytes at data[sent..]; the layer queues all of them.
            let n = unsafe {
                (api.PR_Write)(
                    self.fd,
                    data[sent..].as_ptr() as *const c_void,
                    chunk as i32,
                )
            };
            let code = if n < 0 { ffi::last_error() } else { 0 };
            self.reraise();
            if n <= 0 {
                return Err(self.failure(code, false));
            }
            sent += n as usize;
        }
        Ok(sent)
    }

    fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        if self.done {
            // SAFETY: our socket; queues close_notify (the layer's shutdown does nothing).
            unsafe { (ffi::api().PR_Shutdown)(self.fd, PR_SHUTDOWN_SEND) };
            self.reraise();
        }
    }

    fn close_notify_received(&self) -> bool {
        self.core().close_notify
    }

    fn peer_certificates(&self) -> Vec<Vec<u8>> {
        if !self.done {
            return Vec::new();
        }
        let api = ffi::api();
        // SAFETY: a new list we free; DER is copied out before.
        unsafe {
            let list = (api.SSL_PeerCertificateChain)(self.fd);
            let out = cert_list_iter(list)
                .into_iter()
                .map(|c| cert_der(c).to_vec())
                .collect();
            if !list.is_null() {
                (api.CERT_DestroyCertList)(list);
            }
            out
        }
    }

    fn cipher_suite(&self) -> Option<u16> {
        self.channel_info().map(|i| u16_at(&i, CHANNEL_INFO_SUITE))
    }

    fn protocol_version(&self) -> Option<u16> {
        self.channel_info()
            .map(|i| u16_at(&i, CHANNEL_INFO_VERSION))
    }

    fn alpn_protocol(&self) -> Option<Vec<u8>> {
        if !self.done {
            return None;
        }
        let mut state: c_int = 0;
        let mut buf = [0u8; 255];
        let mut len: c_uint = 0;
        // SAFETY: a 255-byte buffer, as we tell NSS.
        let rv = unsafe {
            (ffi::api().SSL_GetNextProto)(
                self.fd,
                &mut state,
                buf.as_mut_ptr(),
                &mut len,
                buf.len() as c_uint,
            )
        };
        let chosen = state == SSL_NEXT_PROTO_NEGOTIATED || state == SSL_NEXT_PROTO_SELECTED;
        (rv == SEC_SUCCESS && chosen && len > 0).then(|| buf[..len as usize].to_vec())
    }

    fn server_name(&self) -> Option<String> {
        self.server_name.clone()
    }

    fn session_resumed(&self) -> bool {
        self.channel_info()
            .is_some_and(|i| u32_at(&i, CHANNEL_INFO_RESUMED) != 0)
    }

    fn negotiated_group(&self) -> Option<u16> {
        let info = self.channel_info()?;
        // A resumed TLS 1.2 session exchanges no key (NSS then reports a placeholder group).
        if u16_at(&info, CHANNEL_INFO_VERSION) == TLS12 && u32_at(&info, CHANNEL_INFO_RESUMED) != 0
        {
            return None;
        }
        let group = u32_at(&info, CHANNEL_INFO_KEA_GROUP);
        (group != 0).then_some(group as u16)
    }
}
