//! `NssClientConfig` / `NssServerConfig`: immutable configurations built once from Python, with
//! the same constructor arguments as the rustls ones (so the Python engine modules share code).
//!
//! NSS has no context object: a configuration is kept as *model sockets* (`SSL_ImportFD` on a
//! descriptor that does no I/O) holding options, versions, cipher suites and, for servers, one
//! chain each; every connection is imported from a model. Cipher suites: NSS enables them one
//! by one by IANA id (`SSL_CipherPrefSet`); the configured order is applied with the
//! experimental `SSL_CipherSuiteOrderSet`. Ids NSS does not implement, or that the system's NSS
//! policy forbids, are a `ConfigurationError` naming them.

use std::ffi::c_uint;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use rustls_pki_types::{CertificateDer, ServerName};

use super::ffi::{self, *};
use super::io::new_layer;
use super::pki::{self, check_key_matches, import_key, temp_certs, Anchors, Cert, Key, Policy};
use super::session::NssSession;
use crate::config::{bytes_of, check_alpn, extract_blobs, hex_list};
use crate::conn::Connection;
use crate::errors::config_err;
use crate::keyinfo::{key_kind, names_der, KeyKind};
use crate::keylog::{self, KeyLogFile};
use crate::resumption::{self, ClientSession, TokenBag, TokenCache};

/// Suites used when a configuration names none: AEAD with forward secrecy only, in NSS's order.
const DEFAULT_SUITES: &[u16] = &[
    0x1301, 0x1303, 0x1302, // TLS 1.3
    0xC02B, 0xC02F, 0xCCA9, 0xCCA8, 0xC02C, 0xC030, // ECDHE with AES-GCM / ChaCha20-Poly1305
];

fn is_tls13_suite(id: u16) -> bool {
    id >> 8 == 0x13
}

/// NSS, or the ConfigurationError that says why the engine cannot be used here.
fn loaded() -> PyResult<&'static Nss> {
    ffi::nss().map_err(|why| config_err(format!("the nss engine is not usable here: {why}")))
}

fn implemented(nss: &Nss) -> Vec<u16> {
    // SAFETY: a static array of `SSL_GetNumImplementedCiphers()` entries.
    unsafe {
        let n = (nss.api.SSL_GetNumImplementedCiphers)() as usize;
        let p = (nss.api.SSL_GetImplementedCiphers)();
        if p.is_null() {
            return Vec::new();
        }
        std::slice::from_raw_parts(p, n).to_vec()
    }
}

fn policy_allows(nss: &Nss, id: u16) -> bool {
    let mut policy = 0i32;
    // SAFETY: writes one PRInt32.
    let rv = unsafe { (nss.api.SSL_CipherPolicyGet)(id as i32, &mut policy) };
    rv == SEC_SUCCESS && policy == SSL_ALLOWED
}

/// IANA ids of the cipher suites this NSS implements and its policy allows.
#[pyfunction]
pub fn nss_supported_cipher_suites() -> PyResult<Vec<u16>> {
    let nss = loaded()?;
    Ok(implemented(nss)
        .into_iter()
        .filter(|id| policy_allows(nss, *id))
        .collect())
}

/// The key exchange groups (IANA codepoints, NSS's `SSLNamedGroup` values) the nss engine can
/// be asked for (`groups`): the elliptic curves every NSS since 3.28 has.
pub const NSS_GROUPS: [u16; 4] = [0x001D, 0x0017, 0x0018, 0x0019];

/// See `NSS_GROUPS`.
#[pyfunction]
pub fn nss_supported_groups() -> Vec<u16> {
    NSS_GROUPS.to_vec()
}

/// `(True, "NSS 3.87.1 (NSPR 4.35)")`, or `(False, why the nss engine is unavailable)`.
#[pyfunction]
pub fn nss_status() -> (bool, String) {
    match ffi::nss() {
        Ok(nss) => (
            true,
            format!("NSS {} (NSPR {})", nss.version, nss.nspr_version),
        ),
        Err(why) => (false, why),
    }
}

/// The suites to enable, in order, and the version range they can serve.
fn plan_suites(
    nss: &Nss,
    ids: Option<&[u16]>,
    versions: &[u16],
) -> PyResult<(Vec<u16>, SSLVersionRange)> {
    if versions.is_empty() {
        return Err(config_err(
            "no TLS version enabled: enable TLS 1.2 (0x0303) and/or TLS 1.3 (0x0304)",
        ));
    }
    if let Some(bad) = versions.iter().find(|v| **v != TLS12 && **v != TLS13) {
        return Err(config_err(format!(
            "unsupported TLS version 0x{bad:04X}: the nss engine supports only TLS 1.2 (0x0303) \
             and TLS 1.3 (0x0304)"
        )));
    }
    let have = implemented(nss);
    let suites: Vec<u16> = match ids {
        None => DEFAULT_SUITES
            .iter()
            .copied()
            .filter(|id| have.contains(id) && policy_allows(nss, *id))
            .collect(),
        Some(ids) => {
            let mut out: Vec<u16> = Vec::new();
            for id in ids {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
            let unknown: Vec<u16> = out.iter().copied().filter(|i| !have.contains(i)).collect();
            if !unknown.is_empty() {
                return Err(config_err(format!(
                    "NSS {} does not implement the cipher suite(s) {} (it has no CCM suites)",
                    nss.version,
                    hex_list(&unknown)
                )));
            }
            let forbidden: Vec<u16> = out
                .iter()
                .copied()
                .filter(|i| !policy_allows(nss, *i))
                .collect();
            if !forbidden.is_empty() {
                return Err(config_err(format!(
                    "the system's NSS policy forbids the cipher suite(s) {}",
                    hex_list(&forbidden)
                )));
            }
            out
        }
    };
    let serves = |v: u16| suites.iter().any(|s| is_tls13_suite(*s) == (v == TLS13));
    let usable: Vec<u16> = versions.iter().copied().filter(|v| serves(*v)).collect();
    let (Some(&min), Some(&max)) = (usable.iter().min(), usable.iter().max()) else {
        return Err(config_err(format!(
            "the cipher suites ({}) cannot serve any enabled TLS version: add suites for those \
             versions or enable the version the suites belong to",
            hex_list(&suites)
        )));
    };
    Ok((suites, SSLVersionRange { min, max }))
}

/// "TLS 1.2 to TLS 1.3", "TLS 1.3 only".
fn version_span(min: u16, max: u16) -> String {
    let name = |v: u16| match v {
        0x0301 => "TLS 1.0".to_string(),
        0x0302 => "TLS 1.1".to_string(),
        TLS12 => "TLS 1.2".to_string(),
        TLS13 => "TLS 1.3".to_string(),
        other => format!("version 0x{other:04X}"),
    };
    if min == max {
        format!("{} only", name(min))
    } else {
        format!("{} to {}", name(min), name(max))
    }
}

fn model_err(what: &str) -> PyErr {
    config_err(format!(
        "NSS refused the configuration: {what} failed ({})",
        pki::describe(ffi::last_error())
    ))
}

/// A model socket with everything a configuration sets on every connection.
struct Model(*mut PRFileDesc);

// SAFETY: configured once, then only read by SSL_ImportFD (NSS copies it into new sockets).
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: closes the model socket and its layer.
        unsafe { (ffi::api().PR_Close)(self.0) };
    }
}

impl Model {
    fn new(
        nss: &Nss,
        suites: &[u16],
        range: &SSLVersionRange,
        options: &[(i32, i32)],
        groups: Option<&[u16]>,
    ) -> PyResult<Model> {
        let api = &nss.api;
        let layer = new_layer(std::ptr::null_mut());
        if layer.is_null() {
            return Err(model_err("PR_CreateIOLayerStub"));
        }
        // SAFETY: the layer becomes the model's lower layer; the model is ours.
        let model = unsafe { (api.SSL_ImportFD)(std::ptr::null_mut(), layer) };
        if model.is_null() {
            let err = model_err("SSL_ImportFD");
            // SAFETY: the layer was not imported: close it ourselves.
            unsafe { (api.PR_Close)(layer) };
            return Err(err);
        }
        let m = Model(model);
        let set = |id: i32, val: i32| -> PyResult<()> {
            // SAFETY: option ids and values from ssl.h.
            if unsafe { (api.SSL_OptionSet)(model, id, val) } != SEC_SUCCESS {
                return Err(model_err(&format!("SSL_OptionSet({id})")));
            }
            Ok(())
        };
        // SSL_NO_LOCKS is left off although the Connection's lock serialises each socket:
        // NSS 3.87 crashes sending any alert without locks (SSL3_SendAlert asks whether it
        // holds a NULL monitor).
        // What unitls never wants: renegotiation, false start, 0-RTT, OCSP stapling requests,
        // post-handshake authentication (compression is not implemented by NSS any more).
        set(SSL_ENABLE_RENEGOTIATION, SSL_RENEGOTIATE_NEVER)?;
        set(SSL_ENABLE_FALSE_START, 0)?;
        set(SSL_ENABLE_0RTT_DATA, 0)?;
        set(SSL_ENABLE_OCSP_STAPLING, 0)?;
        set(SSL_ENABLE_POST_HANDSHAKE_AUTH, 0)?;
        set(SSL_ENABLE_ALPN, 1)?;
        for (id, val) in options {
            set(*id, *val)?;
        }
        // SAFETY: plain configuration calls on our model.
        unsafe {
            if (api.SSL_VersionRangeSet)(model, range) != SEC_SUCCESS {
                return Err(model_err("SSL_VersionRangeSet"));
            }
            if let Some(groups) = groups {
                if let Some(id) = groups.iter().find(|id| !NSS_GROUPS.contains(id)) {
                    return Err(config_err(format!(
                        "the nss engine cannot do the key exchange group 0x{id:04x}"
                    )));
                }
                let wide: Vec<u32> = groups.iter().map(|&id| u32::from(id)).collect();
                if (api.SSL_NamedGroupConfig)(model, wide.as_ptr(), wide.len() as c_uint)
                    != SEC_SUCCESS
                {
                    return Err(model_err("SSL_NamedGroupConfig"));
                }
            }
            for id in implemented(nss) {
                let on = if suites.contains(&id) {
                    PR_TRUE
                } else {
                    PR_FALSE
                };
                if (api.SSL_CipherPrefSet)(model, id as i32, on) != SEC_SUCCESS {
                    return Err(model_err(&format!("SSL_CipherPrefSet(0x{id:04X})")));
                }
            }
            if let Some(order) = nss.exp.cipher_suite_order_set {
                if order(model, suites.as_ptr(), suites.len() as c_uint) != SEC_SUCCESS {
                    return Err(model_err("SSL_CipherSuiteOrderSet"));
                }
            }
            // A system policy may override both silently (NSS_DEFAULT_SSL_LOCK, version
            // limits): read back what NSS will use.
            let mut got = SSLVersionRange { min: 0, max: 0 };
            if (api.SSL_VersionRangeGet)(model, &mut got) != SEC_SUCCESS
                || (got.min, got.max) != (range.min, range.max)
            {
                return Err(config_err(format!(
                    "the system's NSS policy does not allow {}: NSS would use {}; allow only \
                     the versions the policy permits",
                    version_span(range.min, range.max),
                    version_span(got.min, got.max)
                )));
            }
            let mut wrong = Vec::new();
            for id in implemented(nss) {
                let mut on: PRBool = 0;
                let rv = (api.SSL_CipherPrefGet)(model, id as i32, &mut on);
                if rv != SEC_SUCCESS || (on != 0) != suites.contains(&id) {
                    wrong.push(id);
                }
            }
            if !wrong.is_empty() {
                return Err(config_err(format!(
                    "the system's NSS policy keeps unitls from choosing cipher suites: NSS does \
                     not enable or disable {} as configured",
                    hex_list(&wrong)
                )));
            }
        }
        Ok(m)
    }
}

/// ALPN as NSS wants it: u8-length-prefixed, the last preference first (NSS moves the first
/// entry to the end of its stored list; see `nss.md`).
fn alpn_wire(alpn: &[Vec<u8>]) -> Vec<u8> {
    let mut order: Vec<&Vec<u8>> = alpn.iter().collect();
    if let Some(last) = order.pop() {
        order.insert(0, last);
    }
    let mut out = Vec::new();
    for p in order {
        out.push(p.len() as u8);
        out.extend_from_slice(p);
    }
    out
}

/// A client certificate and its key (the hook hands NSS new references to them). NSS builds the
/// chain it sends from the leaf and the certificates it holds, which include `_chain`.
pub struct ClientIdentity {
    pub cert: Cert,
    pub key: Key,
    _chain: Vec<Cert>,
}

/// Everything client connections of one configuration share.
pub struct ClientShared {
    model: Model,
    anchors: Option<Arc<Anchors>>,
    pub identity: Option<Arc<ClientIdentity>>,
    pub alpn_wire: Vec<u8>,
    /// unitls' session cache, keyed by (name, port), filled from NSS's resumption tokens
    /// (`None`: resumption off; an offered session still resumes). NSS's own client cache is
    /// process-wide and keyed by address and name: it is not used.
    pub cache: Option<Arc<TokenCache>>,
    /// Identifies this configuration's sessions.
    pub origin: u64,
    /// Where TLS 1.3 secrets are logged.
    pub keylog: Option<Arc<KeyLogFile>>,
    verify_hostname: bool,
}

impl ClientShared {
    pub fn model(&self) -> *mut PRFileDesc {
        self.model.0
    }
}

/// One serving chain: its model socket and its leaf (for SNI matching).
pub struct ServerChain {
    model: Model,
    leaf: Vec<u8>,
}

/// Everything server connections of one configuration share.
pub struct ServerShared {
    pub chains: Vec<ServerChain>,
    pub alpn: Vec<Vec<u8>>,
    pub alpn_wire: Vec<u8>,
    client_anchors: Option<Arc<Anchors>>,
    /// Secret of this server's ticket tokens (`None`: no tickets); see `ticket_tokens`.
    ticket_secret: Option<[u8; 32]>,
    /// Where TLS 1.3 secrets are logged.
    pub keylog: Option<Arc<KeyLogFile>>,
}

/// How long a ticket token is issued; it is accepted for as long again (as rustls' ticket keys).
const TICKET_TOKEN_PERIOD: u64 = 6 * 60 * 60;

impl ServerShared {
    /// The token TLS 1.3 tickets carry now and the previous period's, which is still accepted
    /// (`None`: no tickets). NSS encrypts tickets under one process-wide key that never changes
    /// (3.87 has no per-context or rotating keys), so the token is what makes a ticket this
    /// server context's, and only for 6 to 12 hours.
    pub fn ticket_tokens(&self) -> Option<([u8; 32], [u8; 32])> {
        let secret = self.ticket_secret?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let period = now / TICKET_TOKEN_PERIOD;
        let token = |period: u64| {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(b"unitls nss server ticket token v2");
            ctx.update(&secret);
            ctx.update(&period.to_be_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(ctx.finish().as_ref());
            out
        };
        Some((token(period), token(period.saturating_sub(1))))
    }
}

/// Open the key log for a configuration, or refuse: NSS hands over TLS 1.3 secrets only.
fn keylog_for(
    nss: &Nss,
    path: Option<PathBuf>,
    range: &SSLVersionRange,
) -> PyResult<Option<Arc<KeyLogFile>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    if range.min < TLS13 {
        return Err(config_err(
            "the nss engine can log TLS 1.3 secrets only (NSS gives no TLS 1.2 master secret, and \
             Debian's NSS ignores SSLKEYLOGFILE itself): set lowest_supported_version=TLSv1_3, \
             use another engine, or unset SSLKEYLOGFILE / keylog_filename",
        ));
    }
    if nss.exp.secret_callback.is_none() {
        return Err(config_err(
            "this NSS lacks SSL_SecretCallback: the nss engine cannot log TLS secrets here",
        ));
    }
    keylog::open(path).map(Some)
}

impl ServerChain {
    pub fn model(&self) -> *mut PRFileDesc {
        self.model.0
    }

    fn valid_for(&self, name: &ServerName<'_>) -> bool {
        let der = CertificateDer::from(self.leaf.as_slice());
        webpki::EndEntityCert::try_from(&der)
            .map(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
            .unwrap_or(false)
    }
}

impl ServerShared {
    /// The first chain whose leaf is valid for the client's SNI name (every DNS SAN, wildcards).
    pub fn chain_for_name(&self, name: &str) -> Option<usize> {
        if self.chains.len() < 2 {
            return None;
        }
        let name = ServerName::try_from(name).ok()?;
        self.chains.iter().position(|c| c.valid_for(&name))
    }
}

/// A chain and its key, loaded into NSS.
struct Certified {
    what: String,
    certs: Vec<Cert>,
    key: Key,
    leaf: Vec<u8>,
    kind: Option<KeyKind>,
}

fn certified_chain(blobs: &[Vec<u8>], key: &[u8], what: &str) -> PyResult<Certified> {
    let certs = temp_certs(blobs, &format!("{what} certificate"))?;
    let Some(leaf) = certs.first() else {
        return Err(config_err(format!(
            "{what}: the certificate chain is empty; pass the leaf certificate first, then any \
             intermediates"
        )));
    };
    let leaf = leaf.der().to_vec();
    let (key, pkcs8) = import_key(key, &format!("{what} key"))?;
    check_key_matches(&leaf, &pkcs8, what)?;
    Ok(Certified {
        what: what.to_string(),
        certs,
        key,
        leaf,
        kind: key_kind(&pkcs8),
    })
}

/// Add a chain (sent as given, leaf first: never completed from NSS's store) and its key to a
/// server model. NSS copies the chain and takes its own references to the certificate and key.
fn configure_chain(nss: &Nss, model: &Model, chain: &Certified) -> PyResult<()> {
    let (certs, key, what) = (&chain.certs, &chain.key, &chain.what);
    let mut items: Vec<SECItem> = certs.iter().map(|c| SECItem::borrowed(c.der())).collect();
    let list = CERTCertificateList {
        certs: items.as_mut_ptr(),
        len: items.len() as i32,
        arena: std::ptr::null_mut(),
    };
    let extra = SSLExtraServerCertData {
        auth_type: 0,
        cert_chain: &list,
        stapled_ocsp: std::ptr::null(),
        scts: std::ptr::null(),
        deleg_cred: std::ptr::null(),
        deleg_cred_key: std::ptr::null(),
    };
    // SAFETY: live certificate and key; NSS copies what it keeps (CERT_DupCertList).
    let rv = unsafe {
        (nss.api.SSL_ConfigServerCert)(
            model.0,
            certs[0].ptr(),
            key.ptr(),
            &extra,
            std::mem::size_of::<SSLExtraServerCertData>() as c_uint,
        )
    };
    if rv != SEC_SUCCESS {
        return Err(config_err(format!(
            "{what}: NSS cannot serve this certificate and key ({})",
            pki::describe(ffi::last_error())
        )));
    }
    Ok(())
}

/// Client side configuration.
#[pyclass(frozen, name = "NssClientConfig", module = "unitls._native")]
pub struct NssClientConfig {
    shared: Arc<ClientShared>,
}

#[pymethods]
impl NssClientConfig {
    #[new]
    #[pyo3(signature = (*, ca_certs, system_roots, client_chain, client_key, cipher_suites,
                        versions, alpn, verify_certificates=true, verify_hostname=true,
                        resumption=true, keylog_path=None, groups=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        ca_certs: Option<Vec<Bound<'_, PyAny>>>,
        system_roots: bool,
        client_chain: Option<Vec<Bound<'_, PyAny>>>,
        client_key: Option<Bound<'_, PyAny>>,
        cipher_suites: Option<Vec<u16>>,
        versions: Vec<u16>,
        alpn: Vec<Vec<u8>>,
        verify_certificates: bool,
        verify_hostname: bool,
        resumption: bool,
        keylog_path: Option<PathBuf>,
        groups: Option<Vec<u16>>,
    ) -> PyResult<Self> {
        let nss = loaded()?;
        let ca = extract_blobs(ca_certs, "ca_certs")?;
        let chain = extract_blobs(client_chain, "client_chain")?;
        let key = client_key.map(|k| bytes_of(&k, "client_key")).transpose()?;
        let alpn = check_alpn(alpn)?;
        let (suites, range) = plan_suites(nss, cipher_suites.as_deref(), &versions)?;

        let anchors = if verify_certificates {
            let system = system_roots.then(pki::system_roots).transpose()?;
            let own = match &ca {
                Some(ca) => temp_certs(ca, "ca_certs")?,
                None => Vec::new(),
            };
            match (&system, own.is_empty()) {
                (Some(roots), true) if roots.anchors.is_some() => roots.anchors.clone(),
                _ => {
                    let mut certs = system.as_ref().map(|r| r.certs.clone()).unwrap_or_default();
                    certs.extend(own);
                    if certs.is_empty() {
                        let detail = match &system {
                            Some(roots) if roots.errors.is_empty() => {
                                " (the system trust store holds no certificate)".to_string()
                            }
                            Some(roots) => format!(
                                " (loading the system trust store failed: {})",
                                roots.errors
                            ),
                            None => String::new(),
                        };
                        return Err(config_err(format!(
                            "no trust anchors to verify the server with{detail}: pass \
                             ca_certs, enable the system roots, or disable certificate \
                             verification"
                        )));
                    }
                    Some(Arc::new(Anchors::new(certs)?))
                }
            }
        } else {
            None
        };

        let identity =
            match (chain, key) {
                (Some(chain), Some(key)) => {
                    let Certified { mut certs, key, .. } =
                        certified_chain(&chain, &key, "client certificate")?;
                    let cert = certs.remove(0);
                    Some(Arc::new(ClientIdentity {
                        cert,
                        key,
                        _chain: certs,
                    }))
                }
                (None, None) => None,
                (Some(_), None) => return Err(config_err(
                    "client_chain given without client_key: pass the private key of the client \
                     certificate",
                )),
                (None, Some(_)) => {
                    return Err(config_err(
                        "client_key given without client_chain: pass the client certificate chain",
                    ))
                }
            };

        let keylog = keylog_for(nss, keylog_path, &range)?;
        if nss.exp.set_resumption_token_callback.is_none() || nss.exp.set_resumption_token.is_none()
        {
            return Err(config_err(
                "this NSS lacks SSL_SetResumptionTokenCallback / SSL_SetResumptionToken, which \
                 the nss engine's clients need",
            ));
        }
        // NSS makes resumption tokens only with its cache and tickets on; the token callback
        // (set per connection) keeps the sessions out of NSS's process-wide cache.
        let options = [(SSL_NO_CACHE, 0), (SSL_ENABLE_SESSION_TICKETS, 1)];
        let model = Model::new(nss, &suites, &range, &options, groups.as_deref())?;
        Ok(Self {
            shared: Arc::new(ClientShared {
                model,
                anchors,
                identity,
                alpn_wire: alpn_wire(&alpn),
                cache: resumption.then(|| Arc::new(TokenCache::default())),
                origin: resumption::new_origin(),
                keylog,
                verify_hostname,
            }),
        })
    }

    /// A new client connection to `server_name` (DNS name or IP literal) on `port` (the session
    /// cache key; None when unknown). `session`: resume that session (another connection's
    /// `client_session()` of this configuration) instead of one from the cache.
    #[pyo3(signature = (server_name, port=None, session=None))]
    fn new_connection(
        &self,
        py: Python<'_>,
        server_name: &str,
        port: Option<u16>,
        session: Option<&Bound<'_, ClientSession>>,
    ) -> PyResult<Connection> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            config_err(format!(
                "invalid server name {server_name:?}: pass a DNS name or an IP address literal"
            ))
        })?;
        let shared = &self.shared;
        let key = (server_name.to_ascii_lowercase(), port);
        let offered = session
            .map(|s| s.get().offered::<TokenBag>(shared.origin, &key.0))
            .transpose()?;
        let policy = shared.anchors.as_ref().map(|anchors| Policy {
            anchors: anchors.clone(),
            usage: CERTIFICATE_USAGE_SSL_SERVER,
            name: shared.verify_hostname.then_some(name),
        });
        let bag = Arc::new(TokenBag::new(key, shared.origin));
        let session =
            NssSession::client(shared.clone(), server_name, policy, bag.clone(), offered)?;
        let exported = Py::new(py, ClientSession::new(bag))?.into_any();
        Ok(Connection::new("nss", Box::new(session)).with_client_session(exported))
    }

    /// Forget every cached session (the next connections make full handshakes).
    fn clear_session_cache(&self) {
        if let Some(cache) = &self.shared.cache {
            cache.clear();
        }
    }
}

/// Server side configuration.
#[pyclass(frozen, name = "NssServerConfig", module = "unitls._native")]
pub struct NssServerConfig {
    shared: Arc<ServerShared>,
}

#[pymethods]
impl NssServerConfig {
    #[new]
    #[pyo3(signature = (*, chains, client_ca_certs, require_client_cert, cipher_suites, versions,
                        alpn, session_tickets=true, keylog_path=None, groups=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        chains: Vec<(Vec<Bound<'_, PyAny>>, Bound<'_, PyAny>)>,
        client_ca_certs: Option<Vec<Bound<'_, PyAny>>>,
        require_client_cert: bool,
        cipher_suites: Option<Vec<u16>>,
        versions: Vec<u16>,
        alpn: Vec<Vec<u8>>,
        session_tickets: bool,
        keylog_path: Option<PathBuf>,
        groups: Option<Vec<u16>>,
    ) -> PyResult<Self> {
        let nss = loaded()?;
        let (suites, range) = plan_suites(nss, cipher_suites.as_deref(), &versions)?;
        let keylog = keylog_for(nss, keylog_path, &range)?;
        let alpn = check_alpn(alpn)?;
        if chains.is_empty() {
            return Err(config_err(
                "a server needs at least one certificate chain and its private key",
            ));
        }
        let mut raw = Vec::with_capacity(chains.len());
        for (i, (certs, key)) in chains.iter().enumerate() {
            let what = format!("chains[{i}]");
            let blobs = certs
                .iter()
                .enumerate()
                .map(|(j, o)| bytes_of(o, &format!("{what} certificate[{j}]")))
                .collect::<PyResult<Vec<_>>>()?;
            raw.push((blobs, bytes_of(key, &format!("{what} key"))?));
        }
        let client_ca = extract_blobs(client_ca_certs, "client_ca_certs")?;
        let client_anchors = match &client_ca {
            Some(ca) => {
                let anchors = Anchors::new(temp_certs(ca, "client_ca_certs")?)?;
                if anchors.is_empty() {
                    return Err(config_err(
                        "client_ca_certs is empty: pass the CA certificates that issue client \
                         certificates, or None for no client authentication",
                    ));
                }
                Some(Arc::new(anchors))
            }
            None if require_client_cert => {
                return Err(config_err(
                    "require_client_cert needs client_ca_certs: pass the CA certificates that \
                     issue client certificates",
                ))
            }
            None => None,
        };
        // TLS 1.2 resumption is off: NSS's session cache and ticket key are process-wide.
        let mut options = vec![(SSL_NO_CACHE, 1), (SSL_ENABLE_SESSION_TICKETS, 0)];
        if client_anchors.is_some() {
            options.push((SSL_REQUEST_CERTIFICATE, 1));
            options.push((
                SSL_REQUIRE_CERTIFICATE,
                if require_client_cert {
                    SSL_REQUIRE_ALWAYS
                } else {
                    SSL_REQUIRE_NEVER
                },
            ));
        }
        let mut loaded = Vec::with_capacity(raw.len());
        for (i, (blobs, key)) in raw.iter().enumerate() {
            let what = format!("chains[{i}]");
            loaded.push(certified_chain(blobs, key, &what)?);
        }
        // Chains valid for the same names with different key types (an RSA and an ECDSA
        // certificate for one site) go on the same socket, the chosen one first: NSS keeps one
        // certificate per key type and serves the first the client can use (its signature
        // schemes, and in TLS 1.2 its suites), as OpenSSL does.
        let names: Vec<Option<Vec<u8>>> = loaded.iter().map(|c| names_der(&c.leaf)).collect();
        let mut served = Vec::with_capacity(loaded.len());
        for (i, chain) in loaded.iter().enumerate() {
            let model = Model::new(nss, &suites, &range, &options, groups.as_deref())?;
            configure_chain(nss, &model, chain)?;
            let mut kinds = vec![chain.kind.clone()];
            for (j, other) in loaded.iter().enumerate() {
                if j == i
                    || names[j].is_none()
                    || names[j] != names[i]
                    || kinds.contains(&other.kind)
                {
                    continue;
                }
                configure_chain(nss, &model, other)?;
                kinds.push(other.kind.clone());
            }
            served.push(ServerChain {
                model,
                leaf: chain.leaf.clone(),
            });
        }
        // NSS now holds its own references (and copies of the keys): `loaded` may go.
        let ticket_secret = if session_tickets {
            let mut secret = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                .map_err(|_| config_err("cannot make a ticket secret: no system randomness"))?;
            Some(secret)
        } else {
            None
        };
        Ok(Self {
            shared: Arc::new(ServerShared {
                chains: served,
                alpn_wire: alpn_wire(&alpn),
                alpn,
                client_anchors,
                ticket_secret,
                keylog,
            }),
        })
    }

    /// A new server connection. `local_address`: the IP the client connected to; with several
    /// chains, clients that send no SNI get the first chain naming that IP.
    #[pyo3(signature = (local_address=None))]
    fn new_connection(&self, local_address: Option<&str>) -> PyResult<Connection> {
        let shared = &self.shared;
        let default_chain = local_address
            .filter(|_| shared.chains.len() > 1)
            .and_then(|addr| addr.parse::<std::net::IpAddr>().ok())
            .and_then(|ip| {
                let name = ServerName::IpAddress(ip.into());
                shared.chains.iter().position(|c| c.valid_for(&name))
            })
            .unwrap_or(0);
        let policy = shared.client_anchors.as_ref().map(|anchors| Policy {
            anchors: anchors.clone(),
            usage: CERTIFICATE_USAGE_SSL_CLIENT,
            name: None,
        });
        let session = NssSession::server(shared.clone(), default_chain, policy);
        Ok(Connection::new("nss", Box::new(session)))
    }
}
