//! NSS and NSPR as C declarations, opened at run time (`dlopen`), and the process-wide setup.
//!
//! Nothing here is linked: the extension builds and the other engines work on a machine without
//! NSS, and `status()` says why the NSS engine is not usable there. The libraries are opened once
//! and never closed (NSS keeps process-wide state and threads may still be inside it at exit).
//!
//! Struct layouts are those of NSS 3.87 / NSPR 4.35 on LP64 (checked against the headers with
//! `offsetof`, and by the compile-time asserts below). NSS refuses a `SSLChannelInfo` longer than
//! its own, so the engine requires NSS 3.87 or newer: newer versions only append fields.
//!
//! Initialisation (once per process, on first use): `NSS_InitContext` with no database, no module
//! database and no root module: certificates, keys and trust anchors come from memory only. If
//! another library already initialised NSS, the context shares that setup. NSS is never shut
//! down: `NSS_Shutdown` fails while any certificate or key is referenced, Python may free our
//! configurations in any order at exit (or never), and daemon threads may still be in a
//! handshake; there is no database to flush, so leaving it to the process exit loses nothing.
//! The server session-ID cache is configured (tiny) once because NSS servers crash without one
//! (see `nss.md`); unitls' servers use `SSL_NO_CACHE` anyway.
//!
//! Policy: `NSS_SetDomesticPolicy` is not called (it would override a policy the system or
//! another library in the process set). Suites the policy forbids are refused by name at
//! configuration, and what NSS actually enabled (suites, versions) is read back, so a policy
//! that silently overrides unitls' settings is a `ConfigurationError`, not a surprise.
//!
//! Fork: Debian's NSS 3.87 is built without fork detection, so a forked child continues its
//! parent's random number generator byte for byte (same ClientHello randoms, same ephemeral
//! keys, same ECDSA nonces: a signing key leaks). `after_fork()` runs before every new
//! configuration and connection; in a new process it reseeds NSS's generator with fresh
//! system entropy and throws away the output NSS had already generated and cached.

#![allow(non_snake_case, non_camel_case_types, clippy::upper_case_acronyms)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use libloading::Library;

pub type PRStatus = c_int;
pub type SECStatus = c_int;
pub type PRBool = c_int;
pub type PRErrorCode = i32;
pub type PRTime = i64;

pub const PR_SUCCESS: PRStatus = 0;
pub const PR_FAILURE: PRStatus = -1;
pub const SEC_SUCCESS: SECStatus = 0;
pub const SEC_FAILURE: SECStatus = -1;
pub const PR_TRUE: PRBool = 1;
pub const PR_FALSE: PRBool = 0;

// prerr.h, sslerr.h (SSL_ERROR_BASE -0x3000), secerr.h (SEC_ERROR_BASE -0x2000).
pub const PR_WOULD_BLOCK_ERROR: PRErrorCode = -5998;
pub const PR_END_OF_FILE_ERROR: PRErrorCode = -5938;
pub const PR_NOT_IMPLEMENTED_ERROR: PRErrorCode = -5992;
pub const PR_IO_ERROR: PRErrorCode = -5991;
pub const SSL_ERROR_NO_CERTIFICATE: PRErrorCode = -12285;
pub const SSL_ERROR_BAD_CERT_DOMAIN: PRErrorCode = -12276;
pub const SSL_ERROR_RX_RECORD_TOO_LONG: PRErrorCode = -12263;
pub const SSL_ERROR_RX_UNKNOWN_RECORD_TYPE: PRErrorCode = -12233;
pub const SSL_ERROR_CLOSE_NOTIFY_ALERT: PRErrorCode = -12230;
pub const SSL_ERROR_RX_UNEXPECTED_RECORD_TYPE: PRErrorCode = -12109;
pub const SEC_ERROR_BAD_SIGNATURE: PRErrorCode = -8182;
pub const SEC_ERROR_EXPIRED_CERTIFICATE: PRErrorCode = -8181;
pub const SEC_ERROR_REVOKED_CERTIFICATE: PRErrorCode = -8180;
pub const SEC_ERROR_UNKNOWN_ISSUER: PRErrorCode = -8179;
pub const SEC_ERROR_UNTRUSTED_ISSUER: PRErrorCode = -8172;
pub const SEC_ERROR_UNTRUSTED_CERT: PRErrorCode = -8171;
pub const SEC_ERROR_EXPIRED_ISSUER_CERTIFICATE: PRErrorCode = -8162;
pub const SEC_ERROR_EXTENSION_VALUE_INVALID: PRErrorCode = -8158;
pub const SEC_ERROR_CA_CERT_INVALID: PRErrorCode = -8156;
pub const SEC_ERROR_PATH_LEN_CONSTRAINT_INVALID: PRErrorCode = -8155;
pub const SEC_ERROR_CERT_USAGES_INVALID: PRErrorCode = -8154;
pub const SEC_ERROR_UNKNOWN_CRITICAL_EXTENSION: PRErrorCode = -8151;
pub const SEC_ERROR_INADEQUATE_KEY_USAGE: PRErrorCode = -8102;
pub const SEC_ERROR_INADEQUATE_CERT_TYPE: PRErrorCode = -8101;
pub const SEC_ERROR_CERT_NOT_IN_NAME_SPACE: PRErrorCode = -8080;
pub const SEC_ERROR_CERT_SIGNATURE_ALGORITHM_DISABLED: PRErrorCode = -8016;
pub const SEC_ERROR_REUSED_ISSUER_AND_SERIAL: PRErrorCode = -8054;

// ssl.h option ids and values.
pub const SSL_REQUEST_CERTIFICATE: i32 = 3;
pub const SSL_NO_CACHE: i32 = 9;
pub const SSL_REQUIRE_CERTIFICATE: i32 = 10;
pub const SSL_ENABLE_SESSION_TICKETS: i32 = 18;
pub const SSL_ENABLE_RENEGOTIATION: i32 = 20;
pub const SSL_ENABLE_FALSE_START: i32 = 22;
pub const SSL_ENABLE_OCSP_STAPLING: i32 = 24;
pub const SSL_ENABLE_ALPN: i32 = 26;
pub const SSL_ENABLE_0RTT_DATA: i32 = 33;
pub const SSL_ENABLE_POST_HANDSHAKE_AUTH: i32 = 39;
pub const SSL_REQUIRE_NEVER: c_int = 0;
pub const SSL_REQUIRE_ALWAYS: c_int = 1;
pub const SSL_RENEGOTIATE_NEVER: c_int = 0;
pub const SSL_ALLOWED: i32 = 1;
pub const SSL_NEXT_PROTO_NEGOTIATED: c_int = 1;
pub const SSL_NEXT_PROTO_SELECTED: c_int = 3;

// NSPR I/O.
pub const PR_DESC_LAYERED: c_int = 4;
pub const PR_SOCKOPT_NONBLOCKING: u32 = 0;
pub const PR_SHUTDOWN_SEND: c_int = 1;
pub const PR_MSG_PEEK: c_int = 2;
pub const PR_INTERVAL_NO_WAIT: u32 = 0;
pub const PR_AF_INET: u16 = 2;

// certt.h
pub const CERTIFICATE_USAGE_SSL_CLIENT: i64 = 0x1;
pub const CERTIFICATE_USAGE_SSL_SERVER: i64 = 0x2;
pub const CERT_PI_END: u32 = 0;
pub const CERT_PI_REVOCATION_FLAGS: u32 = 9;
pub const CERT_PI_TRUST_ANCHORS: u32 = 11;
pub const CERT_PI_USE_AIA_CERT_FETCH: u32 = 12;
pub const CERT_PI_USE_ONLY_TRUST_ANCHORS: u32 = 14;
pub const CERT_PO_END: u32 = 0;
pub const CERT_PO_CERT_LIST: u32 = 3;
pub const KU_ALL: c_uint = 0xff;

// nss.h
pub const NSS_INIT_READONLY: u32 = 0x1;
pub const NSS_INIT_NOCERTDB: u32 = 0x2;
pub const NSS_INIT_NOMODDB: u32 = 0x4;
pub const NSS_INIT_FORCEOPEN: u32 = 0x8;
pub const NSS_INIT_NOROOTINIT: u32 = 0x10;
pub const NSS_INIT_OPTIMIZESPACE: u32 = 0x20;

pub const TLS12: u16 = 0x0303;
pub const TLS13: u16 = 0x0304;

/// NSPR's file descriptor (prio.h).
#[repr(C)]
pub struct PRFileDesc {
    pub methods: *const PRIOMethods,
    pub secret: *mut c_void,
    pub lower: *mut PRFileDesc,
    pub higher: *mut PRFileDesc,
    pub dtor: Option<unsafe extern "C" fn(*mut PRFileDesc)>,
    pub identity: c_int,
}

type Unused = Option<unsafe extern "C" fn()>;
pub type CloseFn = unsafe extern "C" fn(*mut PRFileDesc) -> PRStatus;
pub type ReadFn = unsafe extern "C" fn(*mut PRFileDesc, *mut c_void, i32) -> i32;
pub type WriteFn = unsafe extern "C" fn(*mut PRFileDesc, *const c_void, i32) -> i32;
pub type AvailableFn = unsafe extern "C" fn(*mut PRFileDesc) -> i32;
pub type Available64Fn = unsafe extern "C" fn(*mut PRFileDesc) -> i64;
pub type ShutdownFn = unsafe extern "C" fn(*mut PRFileDesc, c_int) -> PRStatus;
pub type RecvFn = unsafe extern "C" fn(*mut PRFileDesc, *mut c_void, i32, c_int, u32) -> i32;
pub type SendFn = unsafe extern "C" fn(*mut PRFileDesc, *const c_void, i32, c_int, u32) -> i32;
pub type AddrFn = unsafe extern "C" fn(*mut PRFileDesc, *mut PRNetAddr) -> PRStatus;
pub type SockOptFn = unsafe extern "C" fn(*mut PRFileDesc, *mut PRSocketOptionData) -> PRStatus;

/// NSPR's method table (prio.h): 36 members, in this order.
#[repr(C)]
pub struct PRIOMethods {
    pub file_type: c_int,
    pub close: Option<CloseFn>,
    pub read: Option<ReadFn>,
    pub write: Option<WriteFn>,
    pub available: Option<AvailableFn>,
    pub available64: Option<Available64Fn>,
    pub fsync: Unused,
    pub seek: Unused,
    pub seek64: Unused,
    pub file_info: Unused,
    pub file_info64: Unused,
    pub writev: Unused,
    pub connect: Unused,
    pub accept: Unused,
    pub bind: Unused,
    pub listen: Unused,
    pub shutdown: Option<ShutdownFn>,
    pub recv: Option<RecvFn>,
    pub send: Option<SendFn>,
    pub recvfrom: Unused,
    pub sendto: Unused,
    pub poll: Unused,
    pub acceptread: Unused,
    pub transmitfile: Unused,
    pub getsockname: Option<AddrFn>,
    pub getpeername: Option<AddrFn>,
    pub reserved_fn_6: Unused,
    pub reserved_fn_5: Unused,
    pub getsocketoption: Option<SockOptFn>,
    pub setsocketoption: Unused,
    pub sendfile: Unused,
    pub connectcontinue: Unused,
    pub reserved_fn_3: Unused,
    pub reserved_fn_2: Unused,
    pub reserved_fn_1: Unused,
    pub reserved_fn_0: Unused,
}

// SAFETY: a table of function pointers, never mutated.
unsafe impl Sync for PRIOMethods {}

/// `PRNetAddr` (prio.h), only its IPv4 view is written; 112 bytes in all.
#[repr(C)]
pub struct PRNetAddr {
    pub family: u16,
    pub port: u16,
    pub ip: u32,
    pub rest: [u8; 104],
}

/// `PRSocketOptionData` (prio.h): the option, then a union (a PRBool for non-blocking).
#[repr(C)]
pub struct PRSocketOptionData {
    pub option: u32,
    pub value: [u64; 28],
}

/// `SECItem` (seccomon.h).
#[repr(C)]
pub struct SECItem {
    pub kind: u32,
    pub data: *mut u8,
    pub len: c_uint,
}

impl SECItem {
    /// A view of `data` (NSS only reads it when given as input).
    pub fn borrowed(data: &[u8]) -> SECItem {
        SECItem {
            kind: 0,
            data: data.as_ptr() as *mut u8,
            len: data.len() as c_uint,
        }
    }
}

/// Opaque NSS objects.
pub enum CERTCertificate {}
pub enum SECKEYPrivateKey {}
pub enum PK11SlotInfo {}
pub enum CERTCertDBHandle {}

/// `PRCList` (prclist.h).
#[repr(C)]
pub struct PRCList {
    pub next: *mut PRCList,
    pub prev: *mut PRCList,
}

/// `CERTCertList` (certt.h).
#[repr(C)]
pub struct CERTCertList {
    pub list: PRCList,
    pub arena: *mut c_void,
}

/// `CERTCertListNode` (certt.h).
#[repr(C)]
pub struct CERTCertListNode {
    pub links: PRCList,
    pub cert: *mut CERTCertificate,
    pub app_data: *mut c_void,
}

/// `CERTCertificateList` (certt.h): DER certificates as sent in a Certificate message.
#[repr(C)]
pub struct CERTCertificateList {
    pub certs: *mut SECItem,
    pub len: c_int,
    pub arena: *mut c_void,
}

/// `CERTValInParam` / `CERTValOutParam` (certt.h): a type, then the value's three unions.
#[repr(C)]
pub struct CertValParam {
    pub kind: u32,
    pub scalar: u64,
    pub pointer: *const c_void,
    pub array: *const c_void,
    pub array_size: c_int,
}

impl CertValParam {
    pub fn new(kind: u32) -> Self {
        CertValParam {
            kind,
            scalar: 0,
            pointer: std::ptr::null(),
            array: std::ptr::null(),
            array_size: 0,
        }
    }
}

/// `SSLVersionRange` (sslt.h).
#[repr(C)]
pub struct SSLVersionRange {
    pub min: u16,
    pub max: u16,
}

/// `SSLExtraServerCertData` (sslt.h); `auth_type` 0 (ssl_auth_null): derived from the key.
#[repr(C)]
pub struct SSLExtraServerCertData {
    pub auth_type: u32,
    pub cert_chain: *const CERTCertificateList,
    pub stapled_ocsp: *const c_void,
    pub scts: *const SECItem,
    pub deleg_cred: *const SECItem,
    pub deleg_cred_key: *const SECKEYPrivateKey,
}

/// `SSLAlert` (sslt.h).
#[repr(C)]
pub struct SSLAlert {
    pub level: u8,
    pub description: u8,
}

/// `SSLChannelInfo` as NSS 3.87 defines it (sslt.h), read as raw bytes at these offsets.
pub const CHANNEL_INFO_LEN: usize = 136;
pub const CHANNEL_INFO_VERSION: usize = 4;
pub const CHANNEL_INFO_SUITE: usize = 6;
pub const CHANNEL_INFO_KEA_GROUP: usize = 88;
pub const CHANNEL_INFO_RESUMED: usize = 112;

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<PRFileDesc>() == 48);
    assert!(offset_of!(PRFileDesc, dtor) == 32);
    assert!(size_of::<PRIOMethods>() == 288);
    assert!(offset_of!(PRIOMethods, shutdown) == 128);
    assert!(offset_of!(PRIOMethods, recv) == 136);
    assert!(offset_of!(PRIOMethods, getsocketoption) == 224);
    assert!(size_of::<PRNetAddr>() == 112);
    assert!(size_of::<PRSocketOptionData>() == 232);
    assert!(size_of::<SECItem>() == 24);
    assert!(size_of::<CERTCertList>() == 24);
    assert!(offset_of!(CERTCertListNode, cert) == 16);
    assert!(size_of::<CERTCertificateList>() == 24);
    assert!(size_of::<CertValParam>() == 40);
    assert!(offset_of!(CertValParam, pointer) == 16);
    assert!(size_of::<SSLExtraServerCertData>() == 48);
    assert!(size_of::<SSLAlert>() == 2);
};

/// Offset of `derCert` (a SECItem) in `CERTCertificate` (certt.h, NSS 3.87).
const CERT_DER_OFFSET: usize = 120;

/// The DER of an NSS certificate.
///
/// # Safety
/// `cert` must be a live `CERTCertificate`.
pub unsafe fn cert_der<'a>(cert: *const CERTCertificate) -> &'a [u8] {
    let item = &*((cert as *const u8).add(CERT_DER_OFFSET) as *const SECItem);
    if item.data.is_null() || item.len == 0 {
        return &[];
    }
    std::slice::from_raw_parts(item.data, item.len as usize)
}

/// Iterate a `CERTCertList`'s certificates (borrowed from the list).
///
/// # Safety
/// `list` must be a live list, not modified while iterating.
pub unsafe fn cert_list_iter(list: *const CERTCertList) -> Vec<*mut CERTCertificate> {
    let mut out = Vec::new();
    if list.is_null() {
        return out;
    }
    let head = &(*list).list as *const PRCList;
    let mut node = (*list).list.next as *const PRCList;
    while !node.is_null() && node != head {
        let n = node as *const CERTCertListNode;
        out.push((*n).cert);
        node = (*n).links.next;
    }
    out
}

pub type AuthCertificateFn =
    unsafe extern "C" fn(*mut c_void, *mut PRFileDesc, PRBool, PRBool) -> SECStatus;
pub type ClientAuthDataFn = unsafe extern "C" fn(
    *mut c_void,
    *mut PRFileDesc,
    *mut c_void,
    *mut *mut CERTCertificate,
    *mut *mut SECKEYPrivateKey,
) -> SECStatus;
pub type AlertCallbackFn = unsafe extern "C" fn(*const PRFileDesc, *mut c_void, *const SSLAlert);
pub type HelloRetryRequestFn = unsafe extern "C" fn(
    PRBool,
    *const u8,
    c_uint,
    *mut u8,
    *mut c_uint,
    c_uint,
    *mut c_void,
) -> c_int;
pub type TimeFn = unsafe extern "C" fn(*mut c_void) -> PRTime;
/// `SSLSecretCallback` (sslexp.h): (fd, epoch, direction, `PK11SymKey *`, arg).
pub type SecretFn = unsafe extern "C" fn(*mut PRFileDesc, u16, c_int, *mut c_void, *mut c_void);
/// `SSLResumptionTokenCallback` (sslexp.h): (fd, token, length, arg); NSS frees the token after.
pub type ResumptionTokenFn =
    unsafe extern "C" fn(*mut PRFileDesc, *const u8, c_uint, *mut c_void) -> SECStatus;
/// `SSLSecretDirection` (sslt.h): `ssl_secret_read` is 1.
pub const SSL_SECRET_WRITE: c_int = 2;
/// `SSLPreliminaryChannelInfo` (sslt.h): u32 length, u32 valuesSet, u16 protocolVersion, ...
pub const PRELIMINARY_INFO_PREFIX: usize = 12;
pub const PRELIMINARY_INFO_VERSION_AT: usize = 8;
pub const SSL_PREINFO_VERSION: u32 = 1;

/// `SSLHelloRetryRequestAction` (sslexp.h).
pub const SSL_HELLO_RETRY_ACCEPT: c_int = 1;
pub const SSL_HELLO_RETRY_REQUEST: c_int = 2;

struct Libs {
    nspr: Library,
    nss: Library,
    ssl: Library,
}

/// Look up `name` (NUL-terminated) in `lib` as a function pointer of type `T`.
///
/// # Safety
/// `T` must be the symbol's real C signature.
unsafe fn sym<T: Copy>(lib: &Library, file: &str, name: &str) -> Result<T, String> {
    match lib.get::<T>(name.as_bytes()) {
        Ok(s) => Ok(*s),
        Err(_) => Err(format!(
            "{file} lacks {}: NSS 3.87 or newer is needed",
            name.trim_end_matches('\0')
        )),
    }
}

macro_rules! nss_api {
    ($( $lib:ident fn $name:ident ( $($arg:ty),* ) $(-> $ret:ty)? ; )*) => {
        /// The NSS/NSPR functions the engine calls (see each library's headers).
        pub struct Api { $( pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )* }

        impl Api {
            fn load(libs: &Libs) -> Result<Self, String> {
                // SAFETY: each type is the function's prototype in the NSS 3.87 headers.
                unsafe {
                    Ok(Api { $( $name: sym(&libs.$lib, lib_file(stringify!($lib)),
                                          concat!(stringify!($name), "\0"))?, )* })
                }
            }
        }
    };
}

nss_api! {
    nspr fn PR_GetVersion() -> *const c_char;
    nspr fn PR_GetUniqueIdentity(*const c_char) -> c_int;
    nspr fn PR_CreateIOLayerStub(c_int, *const PRIOMethods) -> *mut PRFileDesc;
    nspr fn PR_Close(*mut PRFileDesc) -> PRStatus;
    nspr fn PR_Read(*mut PRFileDesc, *mut c_void, i32) -> i32;
    nspr fn PR_Write(*mut PRFileDesc, *const c_void, i32) -> i32;
    nspr fn PR_Recv(*mut PRFileDesc, *mut c_void, i32, c_int, u32) -> i32;
    nspr fn PR_Shutdown(*mut PRFileDesc, c_int) -> PRStatus;
    nspr fn PR_SetError(PRErrorCode, i32);
    nspr fn PR_GetError() -> PRErrorCode;
    nspr fn PR_ErrorToName(PRErrorCode) -> *const c_char;
    nspr fn PR_ErrorToString(PRErrorCode, u32) -> *const c_char;
    nspr fn PR_Now() -> PRTime;
    nss fn NSS_GetVersion() -> *const c_char;
    nss fn NSS_VersionCheck(*const c_char) -> PRBool;
    nss fn NSS_InitContext(*const c_char, *const c_char, *const c_char, *const c_char,
                           *mut c_void, u32) -> *mut c_void;
    nss fn CERT_GetDefaultCertDB() -> *mut CERTCertDBHandle;
    nss fn CERT_NewTempCertificate(*mut CERTCertDBHandle, *mut SECItem, *mut c_char, PRBool,
                                   PRBool) -> *mut CERTCertificate;
    nss fn CERT_DupCertificate(*mut CERTCertificate) -> *mut CERTCertificate;
    nss fn CERT_DestroyCertificate(*mut CERTCertificate);
    nss fn CERT_NewCertList() -> *mut CERTCertList;
    nss fn CERT_AddCertToListTail(*mut CERTCertList, *mut CERTCertificate) -> SECStatus;
    nss fn CERT_DestroyCertList(*mut CERTCertList);
    nss fn CERT_PKIXVerifyCert(*mut CERTCertificate, i64, *mut CertValParam, *mut CertValParam,
                               *mut c_void) -> SECStatus;
    nss fn CERT_GetClassicOCSPDisabledPolicy() -> *const c_void;
    nss fn CERT_GetCertTimes(*const CERTCertificate, *mut PRTime, *mut PRTime) -> SECStatus;
    nss fn PK11_GetInternalSlot() -> *mut PK11SlotInfo;
    nss fn PK11_FreeSlot(*mut PK11SlotInfo);
    nss fn PK11_ExtractKeyValue(*mut c_void) -> SECStatus;
    nss fn PK11_GetKeyData(*mut c_void) -> *mut SECItem;
    nss fn PK11_ImportDERPrivateKeyInfoAndReturnKey(*mut PK11SlotInfo, *mut SECItem, *mut SECItem,
                                                    *mut SECItem, PRBool, PRBool, c_uint,
                                                    *mut *mut SECKEYPrivateKey, *mut c_void)
                                                    -> SECStatus;
    nss fn PK11_RandomUpdate(*mut c_void, usize) -> SECStatus;
    nss fn PK11_GenerateRandom(*mut u8, c_int) -> SECStatus;
    nss fn SECKEY_CopyPrivateKey(*const SECKEYPrivateKey) -> *mut SECKEYPrivateKey;
    nss fn SECKEY_DestroyPrivateKey(*mut SECKEYPrivateKey);
    ssl fn SSL_ImportFD(*mut PRFileDesc, *mut PRFileDesc) -> *mut PRFileDesc;
    ssl fn SSL_OptionSet(*mut PRFileDesc, i32, c_int) -> SECStatus;
    ssl fn SSL_VersionRangeSet(*mut PRFileDesc, *const SSLVersionRange) -> SECStatus;
    ssl fn SSL_CipherPrefSet(*mut PRFileDesc, i32, PRBool) -> SECStatus;
    ssl fn SSL_NamedGroupConfig(*mut PRFileDesc, *const u32, c_uint) -> SECStatus;
    ssl fn SSL_CipherPolicyGet(i32, *mut i32) -> SECStatus;
    ssl fn SSL_CipherPrefGet(*mut PRFileDesc, i32, *mut PRBool) -> SECStatus;
    ssl fn SSL_VersionRangeGet(*mut PRFileDesc, *mut SSLVersionRange) -> SECStatus;
    ssl fn SSL_GetImplementedCiphers() -> *const u16;
    ssl fn SSL_GetNumImplementedCiphers() -> u16;
    ssl fn SSL_SetNextProtoNego(*mut PRFileDesc, *const u8, c_uint) -> SECStatus;
    ssl fn SSL_GetNextProto(*mut PRFileDesc, *mut c_int, *mut u8, *mut c_uint, c_uint) -> SECStatus;
    ssl fn SSL_ConfigServerCert(*mut PRFileDesc, *mut CERTCertificate, *mut SECKEYPrivateKey,
                                *const SSLExtraServerCertData, c_uint) -> SECStatus;
    ssl fn SSL_AuthCertificateHook(*mut PRFileDesc, Option<AuthCertificateFn>, *mut c_void)
                                   -> SECStatus;
    ssl fn SSL_GetClientAuthDataHook(*mut PRFileDesc, Option<ClientAuthDataFn>, *mut c_void)
                                     -> SECStatus;
    ssl fn SSL_AlertReceivedCallback(*mut PRFileDesc, Option<AlertCallbackFn>, *mut c_void)
                                     -> SECStatus;
    ssl fn SSL_SetURL(*mut PRFileDesc, *const c_char) -> c_int;
    ssl fn SSL_ResetHandshake(*mut PRFileDesc, PRBool) -> SECStatus;
    ssl fn SSL_ForceHandshake(*mut PRFileDesc) -> SECStatus;
    ssl fn SSL_DataPending(*mut PRFileDesc) -> c_int;
    ssl fn SSL_PeerCertificateChain(*mut PRFileDesc) -> *mut CERTCertList;
    ssl fn SSL_GetChannelInfo(*mut PRFileDesc, *mut c_void, c_uint) -> SECStatus;
    ssl fn SSL_GetPreliminaryChannelInfo(*mut PRFileDesc, *mut c_void, c_uint) -> SECStatus;
    ssl fn SSL_GetExperimentalAPI(*const c_char) -> *mut c_void;
    ssl fn SSL_ConfigServerSessionIDCacheWithOpt(u32, u32, *const c_char, c_int, c_int, c_int,
                                                 PRBool) -> SECStatus;
}

/// Experimental functions (sslexp.h), fetched by name through `SSL_GetExperimentalAPI`.
pub struct Experimental {
    pub send_session_ticket:
        Option<unsafe extern "C" fn(*mut PRFileDesc, *const u8, c_uint) -> SECStatus>,
    pub hello_retry_request_callback: Option<
        unsafe extern "C" fn(
            *mut PRFileDesc,
            Option<HelloRetryRequestFn>,
            *mut c_void,
        ) -> SECStatus,
    >,
    pub set_time_func:
        Option<unsafe extern "C" fn(*mut PRFileDesc, Option<TimeFn>, *mut c_void) -> SECStatus>,
    /// sslexp.h declares the count as PRUint16; the function (SSLExp_CipherSuiteOrderSet)
    /// takes an unsigned int, which is what is passed.
    pub cipher_suite_order_set:
        Option<unsafe extern "C" fn(*mut PRFileDesc, *const u16, c_uint) -> SECStatus>,
    /// TLS 1.3 traffic secrets as they are derived (key logging).
    pub secret_callback:
        Option<unsafe extern "C" fn(*mut PRFileDesc, Option<SecretFn>, *mut c_void) -> SECStatus>,
    /// Client sessions as tokens for an external cache (unitls' own, keyed by name and port).
    pub set_resumption_token_callback: Option<
        unsafe extern "C" fn(*mut PRFileDesc, Option<ResumptionTokenFn>, *mut c_void) -> SECStatus,
    >,
    pub set_resumption_token:
        Option<unsafe extern "C" fn(*mut PRFileDesc, *const u8, c_uint) -> SECStatus>,
}

/// An experimental function by name (`None` if this NSS lacks it).
///
/// # Safety
/// `T` must be the function's prototype (an `unsafe extern "C" fn`).
unsafe fn experimental<T: Copy>(api: &Api, name: &CStr) -> Option<T> {
    let p = (api.SSL_GetExperimentalAPI)(name.as_ptr());
    if p.is_null() {
        return None;
    }
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    Some(std::mem::transmute_copy::<*mut c_void, T>(&p))
}

fn lib_file(which: &str) -> &'static str {
    match which {
        "nspr" => "libnspr4.so",
        "nss" => "libnss3.so",
        _ => "libssl3.so",
    }
}

/// Debian package that ships a library (the names other distributions use are similar).
fn package_of(file: &str) -> &'static str {
    if file.starts_with("libnspr4") {
        "libnspr4"
    } else {
        "libnss3"
    }
}

/// Where to look for the libraries instead of the system's search path (an NSS built elsewhere).
pub const LIB_DIR_ENV: &str = "UNITLS_NSS_LIB_DIR";

fn open(file: &'static str) -> Result<Library, String> {
    let dir = std::env::var_os(LIB_DIR_ENV);
    let path = match &dir {
        Some(d) => std::path::Path::new(d).join(file).into_os_string(),
        None => file.into(),
    };
    // SAFETY: NSS's and NSPR's initialisers only set up their own state.
    unsafe { Library::new(&path) }.map_err(|e| {
        let pkg = package_of(file);
        let place = match &dir {
            Some(d) => format!(" in {} ({LIB_DIR_ENV})", d.to_string_lossy()),
            None => String::new(),
        };
        format!("{file} not found{place}: install {pkg} (Debian: apt-get install {pkg}) ({e})")
    })
}

/// The loaded and initialised libraries.
pub struct Nss {
    pub api: Api,
    pub exp: Experimental,
    pub version: String,
    pub nspr_version: String,
    /// NSPR identity of unitls' in-memory I/O layer.
    pub layer_identity: c_int,
    _libs: Libs,
}

// SAFETY: function pointers and immutable strings; NSS's functions are thread-safe (per socket
// objects are serialised by their owners).
unsafe impl Send for Nss {}
unsafe impl Sync for Nss {}

fn c_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: NSS returns NUL-terminated static strings here.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The NSS version this engine was written and tested against; older ones lack the
/// `SSLChannelInfo` layout it reads.
const MIN_VERSION: &str = "3.87";

fn load() -> Result<Nss, String> {
    let libs = Libs {
        nspr: open("libnspr4.so")?,
        nss: open("libnss3.so")?,
        ssl: open("libssl3.so")?,
    };
    let api = Api::load(&libs)?;
    // SAFETY: plain calls with valid arguments, in the order NSS documents.
    unsafe {
        let version = c_string((api.NSS_GetVersion)());
        let min = std::ffi::CString::new(MIN_VERSION).expect("no NUL");
        if (api.NSS_VersionCheck)(min.as_ptr()) == PR_FALSE {
            return Err(format!(
                "NSS {version} is too old: the nss engine needs NSS {MIN_VERSION} or newer"
            ));
        }
        let empty = c"".as_ptr();
        let flags = NSS_INIT_READONLY
            | NSS_INIT_NOCERTDB
            | NSS_INIT_NOMODDB
            | NSS_INIT_FORCEOPEN
            | NSS_INIT_NOROOTINIT
            | NSS_INIT_OPTIMIZESPACE;
        let ctx = (api.NSS_InitContext)(empty, empty, empty, empty, std::ptr::null_mut(), flags);
        if ctx.is_null() {
            let code = (api.PR_GetError)();
            return Err(format!(
                "NSS_InitContext failed: {} ({})",
                c_string((api.PR_ErrorToName)(code)),
                c_string((api.PR_ErrorToString)(code, 0))
            ));
        }
        // The context is kept for the life of the process (see the module docs).
        // A tiny server session cache; unitls' server sockets never use it (SSL_NO_CACHE).
        let _ = (api.SSL_ConfigServerSessionIDCacheWithOpt)(0, 0, std::ptr::null(), 1, 1, 1, 0);
        let exp = Experimental {
            send_session_ticket: experimental(&api, c"SSL_SendSessionTicket"),
            hello_retry_request_callback: experimental(&api, c"SSL_HelloRetryRequestCallback"),
            set_time_func: experimental(&api, c"SSL_SetTimeFunc"),
            cipher_suite_order_set: experimental(&api, c"SSL_CipherSuiteOrderSet"),
            secret_callback: experimental(&api, c"SSL_SecretCallback"),
            set_resumption_token_callback: experimental(&api, c"SSL_SetResumptionTokenCallback"),
            set_resumption_token: experimental(&api, c"SSL_SetResumptionToken"),
        };
        let layer_identity = (api.PR_GetUniqueIdentity)(c"unitls-memory".as_ptr());
        let nspr_version = c_string((api.PR_GetVersion)());
        Ok(Nss {
            api,
            exp,
            version,
            nspr_version,
            layer_identity,
            _libs: libs,
        })
    }
}

static NSS: OnceLock<Result<Nss, String>> = OnceLock::new();

/// The process that last seeded NSS's random number generator.
static SEEDED_BY: AtomicU32 = AtomicU32::new(0);

/// In a process forked from the one that initialised NSS: reseed NSS's generator (see the
/// module docs). Cheap otherwise (a `getpid`).
pub fn after_fork(nss: &Nss) {
    let pid = std::process::id();
    let seeded = SEEDED_BY.load(Ordering::Acquire);
    if seeded == pid
        || SEEDED_BY
            .compare_exchange(seeded, pid, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    if seeded == 0 {
        return; // the first use: NSS seeded itself at initialisation
    }
    // More than freebl's 8 KiB additional-input cache forces an immediate reseed; 32 one-byte
    // requests then use up the (at most 31) bytes generated before the fork.
    let mut entropy = vec![0u8; 9 * 1024];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut entropy).is_err() {
        panic!("no system entropy to reseed NSS after fork");
    }
    // SAFETY: NSS copies the seed; one byte is written per call.
    unsafe {
        if (nss.api.PK11_RandomUpdate)(entropy.as_mut_ptr() as *mut c_void, entropy.len())
            != SEC_SUCCESS
        {
            panic!("NSS refused to reseed its random number generator after fork");
        }
        let mut byte = 0u8;
        for _ in 0..32 {
            (nss.api.PK11_GenerateRandom)(&mut byte, 1);
        }
    }
}

/// NSS, loaded and initialised on first use (concurrent first uses wait for one another).
pub fn nss() -> Result<&'static Nss, String> {
    let nss = NSS.get_or_init(load).as_ref().map_err(Clone::clone)?;
    after_fork(nss);
    Ok(nss)
}

/// NSS for code that only runs once `nss()` succeeded (sessions, configurations, callbacks).
pub fn api() -> &'static Api {
    &NSS.get()
        .and_then(|r| r.as_ref().ok())
        .expect("NSS is loaded before any NSS object exists")
        .api
}

/// `PR_ErrorToName` and `PR_ErrorToString` of an NSPR/NSS error code.
pub fn error_text(code: PRErrorCode) -> (String, String) {
    let api = api();
    // SAFETY: both return static strings (or NULL for unknown codes).
    let (name, text) = unsafe {
        (
            c_string((api.PR_ErrorToName)(code)),
            c_string((api.PR_ErrorToString)(code, 0)),
        )
    };
    let name = if name.is_empty() {
        format!("error {code}")
    } else {
        name
    };
    (name, text)
}

/// The thread's last NSPR/NSS error code.
pub fn last_error() -> PRErrorCode {
    // SAFETY: reads NSPR's per-thread error.
    unsafe { (api().PR_GetError)() }
}
