//! `ClientConfig` and `ServerConfig`: immutable rustls configurations built once from Python.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, InconsistentKeys, RootCertStore, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};

use crate::conn::Connection;
use crate::errors::config_err;
use crate::keyinfo::{names_der, pem_problem, why_unusable};
use crate::keylog;
use crate::resumption::{self, ClientSession, ConnStore, RustlsBag, RustlsCache};
use crate::rustls_session::{ConfigChooser, RustlsSession};

/// The ECDSA curves ring signs with.
const RING_CURVES: &[&str] = &["P-256", "P-384"];

const TLS12: u16 = 0x0303;
const TLS13: u16 = 0x0304;

/// Bytes of a `bytes`-like Python object (bytes, bytearray, memoryview, ...).
pub fn bytes_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    match PyBuffer::<u8>::get(obj) {
        Ok(buf) => buf.to_vec(obj.py()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be bytes-like (PEM or DER), not {}",
            obj.get_type().name()?
        ))),
    }
}

pub(crate) fn looks_like_pem(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    data[start..].starts_with(b"-----BEGIN")
}

pub(crate) fn hex_list(ids: &[u16]) -> String {
    ids.iter()
        .map(|i| format!("0x{i:04X}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parse one item: a PEM blob holding one or more CERTIFICATE blocks, or one DER certificate.
pub(crate) fn parse_certs(data: &[u8], what: &str) -> PyResult<Vec<CertificateDer<'static>>> {
    if looks_like_pem(data) {
        let mut out = Vec::new();
        for item in CertificateDer::pem_slice_iter(data) {
            match item {
                Ok(c) => out.push(c),
                Err(e) => return Err(config_err(format!("{what}: {}", pem_problem(&e)))),
            }
        }
        if out.is_empty() {
            return Err(config_err(format!(
                "{what}: the PEM data holds no '-----BEGIN CERTIFICATE-----' block; \
                 pass PEM certificates or one DER certificate"
            )));
        }
        Ok(out)
    } else if data.is_empty() {
        Err(config_err(format!(
            "{what}: empty certificate data; pass PEM text or DER bytes"
        )))
    } else {
        Ok(vec![CertificateDer::from(data.to_vec())])
    }
}

fn parse_cert_list(items: &[Vec<u8>], what: &str) -> PyResult<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    for (i, data) in items.iter().enumerate() {
        out.extend(parse_certs(data, &format!("{what}[{i}]"))?);
    }
    Ok(out)
}

/// Parse a private key (PEM PKCS#8 / SEC1 / PKCS#1, or DER trying PKCS#8, SEC1, PKCS#1 in turn)
/// and load it with the provider.
fn load_key(data: &[u8], provider: &CryptoProvider, what: &str) -> PyResult<Arc<dyn SigningKey>> {
    let load = |der: PrivateKeyDer<'static>| provider.key_provider.load_private_key(der);
    if looks_like_pem(data) {
        let der = match PrivateKeyDer::from_pem_slice(data) {
            Ok(d) => d,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                let hint = if data.windows(9).any(|w| w == b"ENCRYPTED") {
                    " (encrypted keys are not supported: decrypt the key first)"
                } else {
                    ""
                };
                return Err(config_err(format!(
                    "{what}: no private key found in the PEM data{hint}; expected a \
                     'PRIVATE KEY', 'EC PRIVATE KEY' or 'RSA PRIVATE KEY' block"
                )));
            }
            Err(e) => return Err(config_err(format!("{what}: {}", pem_problem(&e)))),
        };
        let raw = der.secret_der().to_vec();
        load(der).map_err(|e| match why_unusable(&raw, "rustls (ring)", RING_CURVES) {
            Some(why) => config_err(format!("{what}: {why}")),
            None => config_err(format!(
                "{what}: unsupported or malformed private key ({e}); rustls (ring) takes \
                 ECDSA P-256/P-384, Ed25519 and RSA keys"
            )),
        })
    } else {
        let attempts: [PrivateKeyDer<'static>; 3] = [
            PrivatePkcs8KeyDer::from(data.to_vec()).into(),
            PrivateSec1KeyDer::from(data.to_vec()).into(),
            PrivatePkcs1KeyDer::from(data.to_vec()).into(),
        ];
        for der in attempts {
            if let Ok(k) = load(der) {
                return Ok(k);
            }
        }
        if let Some(why) = why_unusable(data, "rustls (ring)", RING_CURVES) {
            return Err(config_err(format!("{what}: {why}")));
        }
        Err(config_err(format!(
            "{what}: not a usable private key: the data is neither PEM nor a DER PKCS#8, SEC1 \
             or PKCS#1 key that rustls (ring) supports (ECDSA P-256/P-384, Ed25519, RSA)"
        )))
    }
}

fn certified_key(
    chain_items: &[Vec<u8>],
    key: &[u8],
    provider: &CryptoProvider,
    what: &str,
) -> PyResult<CertifiedKey> {
    let chain = parse_cert_list(chain_items, &format!("{what} certificate"))?;
    let Some(leaf) = chain.first() else {
        return Err(config_err(format!(
            "{what}: the certificate chain is empty; pass the leaf certificate first, then any \
             intermediates"
        )));
    };
    if let Err(e) = webpki::EndEntityCert::try_from(leaf) {
        return Err(config_err(format!(
            "{what}: the leaf certificate is not a valid X.509 certificate ({e:?})"
        )));
    }
    for (i, cert) in chain.iter().enumerate().skip(1) {
        if let Err(e) = webpki::EndEntityCert::try_from(cert) {
            return Err(config_err(format!(
                "{what}: chain certificate #{i} is not a valid X.509 certificate ({e:?}); pass \
                 the intermediate CA certificates (PEM or DER) after the leaf"
            )));
        }
    }
    let signing_key = load_key(key, provider, &format!("{what} key"))?;
    let ck = CertifiedKey::new(chain, signing_key);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(config_err(format!(
                "{what}: the private key does not match the certificate (the leaf, first in the \
                 chain); pass the key that belongs to that certificate"
            )))
        }
        Err(e) => Err(config_err(format!("{what}: {e}"))),
    }
}

fn protocol_versions(versions: &[u16]) -> PyResult<Vec<&'static SupportedProtocolVersion>> {
    if versions.is_empty() {
        return Err(config_err(
            "no TLS version enabled: enable TLS 1.2 (0x0303) and/or TLS 1.3 (0x0304)",
        ));
    }
    let mut out: Vec<&'static SupportedProtocolVersion> = Vec::new();
    // Highest first, as rustls expects no particular order but this is the usual one.
    for want in [TLS13, TLS12] {
        if versions.contains(&want) {
            out.push(if want == TLS13 {
                &rustls::version::TLS13
            } else {
                &rustls::version::TLS12
            });
        }
    }
    if let Some(bad) = versions.iter().find(|v| **v != TLS12 && **v != TLS13) {
        return Err(config_err(format!(
            "unsupported TLS version 0x{bad:04X}: rustls supports only TLS 1.2 (0x0303) and \
             TLS 1.3 (0x0304)"
        )));
    }
    Ok(out)
}

fn version_name(v: u16) -> &'static str {
    if v == TLS13 {
        "TLS 1.3"
    } else {
        "TLS 1.2"
    }
}

/// Every key exchange group of this engine, in its default order: rustls' own (its aws-lc-rs
/// provider, "prefer-post-quantum"), the hybrid first, then ring's classical groups, which a
/// client also offers (x25519 with the hybrid's X25519 key) so a peer without ML-KEM needs no
/// HelloRetryRequest.
fn all_kx_groups() -> Vec<&'static dyn SupportedKxGroup> {
    std::iter::once(crate::pq::X25519MLKEM768)
        .chain(rustls::crypto::ring::default_provider().kx_groups)
        .collect()
}

/// The key exchange groups this engine can be asked for, by IANA codepoint (`groups`), in its
/// default order.
#[pyfunction]
pub fn supported_groups() -> Vec<u16> {
    all_kx_groups()
        .iter()
        .map(|g| u16::from(g.name()))
        .collect()
}

/// The provider with the suites and key exchange groups asked for, and the versions those
/// suites can serve.
fn build_provider(
    cipher_suites: Option<&[u16]>,
    versions: &[u16],
    groups: Option<&[u16]>,
) -> PyResult<(Arc<CryptoProvider>, Vec<&'static SupportedProtocolVersion>)> {
    let wanted_versions = protocol_versions(versions)?;
    let base = rustls::crypto::ring::default_provider();
    let suites: Vec<SupportedCipherSuite> = match cipher_suites {
        None => base.cipher_suites.clone(),
        Some(ids) => {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for id in ids {
                if !seen.insert(*id) {
                    continue;
                }
                if let Some(s) = base
                    .cipher_suites
                    .iter()
                    .find(|s| u16::from(s.suite()) == *id)
                {
                    out.push(*s);
                }
            }
            if out.is_empty() {
                let supported: Vec<u16> = base
                    .cipher_suites
                    .iter()
                    .map(|s| u16::from(s.suite()))
                    .collect();
                return Err(config_err(format!(
                    "none of the requested cipher suites ({}) is available in rustls: rustls \
                     has no CCM suites and only AEAD suites with forward secrecy; it supports {}",
                    hex_list(ids),
                    hex_list(&supported)
                )));
            }
            out
        }
    };
    let usable: Vec<&'static SupportedProtocolVersion> = wanted_versions
        .iter()
        .copied()
        .filter(|v| suites.iter().any(|s| s.version().version == v.version))
        .collect();
    if usable.is_empty() {
        let asked: Vec<&str> = wanted_versions
            .iter()
            .map(|v| version_name(u16::from(v.version)))
            .collect();
        let have: Vec<u16> = suites.iter().map(|s| u16::from(s.suite())).collect();
        return Err(config_err(format!(
            "the cipher suites left ({}) cannot serve any enabled TLS version ({}): add suites \
             for those versions or enable the version the suites belong to",
            hex_list(&have),
            asked.join(", ")
        )));
    }
    let all = all_kx_groups();
    let kx_groups = match groups {
        None => all,
        // In the order asked (Python checked the names against `supported_groups`).
        Some(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                match all.iter().find(|g| u16::from(g.name()) == *id) {
                    Some(g) => out.push(*g),
                    None => {
                        return Err(config_err(format!(
                            "the rustls engine cannot do the key exchange group 0x{id:04x}"
                        )))
                    }
                }
            }
            out
        }
    };
    let provider = CryptoProvider {
        cipher_suites: suites,
        kx_groups,
        ..base
    };
    Ok((Arc::new(provider), usable))
}

/// The system trust store and the errors met loading it.
type SystemRoots = Arc<(RootCertStore, String)>;

/// The system trust store, loaded (and parsed) once per location: SSL_CERT_FILE and
/// SSL_CERT_DIR (which rustls-native-certs honours) are the cache key, so changing them takes
/// effect for the next configuration, as with OpenSSL.
fn system_roots_cache() -> SystemRoots {
    type Key = (Option<std::ffi::OsString>, Option<std::ffi::OsString>);
    static ROOTS: Mutex<Option<(Key, SystemRoots)>> = Mutex::new(None);
    let key: Key = (
        std::env::var_os("SSL_CERT_FILE"),
        std::env::var_os("SSL_CERT_DIR"),
    );
    let mut cached = ROOTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((k, roots)) = cached.as_ref() {
        if *k == key {
            return roots.clone();
        }
    }
    let res = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (_, _) = store.add_parsable_certificates(res.certs);
    let errors = res
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let roots: SystemRoots = Arc::new((store, errors));
    *cached = Some((key, roots.clone()));
    roots
}

pub(crate) fn extract_blobs(
    items: Option<Vec<Bound<'_, PyAny>>>,
    what: &str,
) -> PyResult<Option<Vec<Vec<u8>>>> {
    items
        .map(|v| {
            v.iter()
                .enumerate()
                .map(|(i, o)| bytes_of(o, &format!("{what}[{i}]")))
                .collect()
        })
        .transpose()
}

fn trust_store(ca: &[Vec<u8>], what: &str) -> PyResult<RootCertStore> {
    let mut store = RootCertStore::empty();
    add_to_store(&mut store, ca, what)?;
    Ok(store)
}

fn add_to_store(store: &mut RootCertStore, ca: &[Vec<u8>], what: &str) -> PyResult<()> {
    for (i, data) in ca.iter().enumerate() {
        let item = format!("{what}[{i}]");
        for (j, cert) in parse_certs(data, &item)?.into_iter().enumerate() {
            if let Err(e) = store.add(cert) {
                return Err(config_err(format!(
                    "{item}: certificate #{j} is not a valid X.509 CA certificate ({e})"
                )));
            }
        }
    }
    Ok(())
}

/// Verifies the chain like webpki but ignores a name mismatch (verify_hostname=False).
#[derive(Debug)]
struct IgnoreHostname(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any server certificate (verify_certificates=False). Handshake signatures are still
/// checked, so the peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyServerCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Client side configuration.
#[pyclass(frozen, name = "RustlsClientConfig", module = "unitls._native")]
pub struct ClientConfig {
    inner: Arc<rustls::ClientConfig>,
    /// The session cache (None: resumption off; an offered session still resumes).
    cache: Option<Arc<RustlsCache>>,
    /// Identifies this configuration's sessions.
    origin: u64,
}

#[pymethods]
impl ClientConfig {
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
        let ca = extract_blobs(ca_certs, "ca_certs")?;
        let chain = extract_blobs(client_chain, "client_chain")?;
        let key = client_key.map(|k| bytes_of(&k, "client_key")).transpose()?;
        let (provider, versions) =
            build_provider(cipher_suites.as_deref(), &versions, groups.as_deref())?;

        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| config_err(format!("invalid protocol configuration: {e}")))?;

        let verifier: Arc<dyn ServerCertVerifier> = if verify_certificates {
            let system = system_roots.then(system_roots_cache);
            let mut store = match &system {
                Some(roots) => roots.0.clone(),
                None => RootCertStore::empty(),
            };
            if let Some(ca) = &ca {
                add_to_store(&mut store, ca, "ca_certs")?;
            }
            if store.is_empty() {
                let detail = if let Some(roots) = &system {
                    let errs = &roots.1;
                    if errs.is_empty() {
                        " (the system trust store holds no certificate)".to_string()
                    } else {
                        format!(" (loading the system trust store failed: {errs})")
                    }
                } else {
                    String::new()
                };
                return Err(config_err(format!(
                    "no trust anchors to verify the server with{detail}: pass ca_certs, enable \
                     the system roots, or disable certificate verification"
                )));
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| {
                        config_err(format!("cannot build the certificate verifier: {e}"))
                    })?;
            if verify_hostname {
                webpki
            } else {
                Arc::new(IgnoreHostname(webpki))
            }
        } else {
            Arc::new(AcceptAnyServerCert(
                provider.signature_verification_algorithms,
            ))
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);

        let mut config =
            match (chain, key) {
                (Some(chain), Some(key)) => {
                    let ck = certified_key(&chain, &key, &provider, "client certificate")?;
                    builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(ck)))
                }
                (None, None) => builder.with_no_client_auth(),
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
        config.alpn_protocols = check_alpn(alpn)?;
        if let Some(path) = keylog_path {
            config.key_log = keylog::open(path)?;
        }
        Ok(Self {
            inner: Arc::new(config),
            cache: resumption.then(|| Arc::new(RustlsCache::default())),
            origin: resumption::new_origin(),
        })
    }

    /// A new client connection to `server_name` (DNS name or IP literal) on `port` (the session
    /// cache key; None when unknown). `session`: resume that session (from `client_session()`
    /// of an earlier connection of this configuration) instead of one from the cache.
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
        let key = (server_name.to_ascii_lowercase(), port);
        let offered = session
            .map(|s| s.get().offered::<RustlsBag>(self.origin, &key.0))
            .transpose()?;
        // rustls' store sees only the server name: each connection gets a store that knows
        // its whole key (a copy of the configuration costs a few reference counts).
        let store = ConnStore::new(key, self.origin, self.cache.clone(), offered);
        let bag = store.bag();
        let mut config = (*self.inner).clone();
        config.resumption = rustls::client::Resumption::store(Arc::new(store));
        let conn = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| config_err(format!("cannot start a client connection: {e}")))?;
        let exported = Py::new(py, ClientSession::new(bag))?.into_any();
        Ok(
            rustls_connection(RustlsSession::new(rustls::Connection::Client(conn)))
                .with_client_session(exported),
        )
    }

    /// Forget every cached session (the next connections make full handshakes).
    fn clear_session_cache(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }
}

pub(crate) fn check_alpn(alpn: Vec<Vec<u8>>) -> PyResult<Vec<Vec<u8>>> {
    for p in &alpn {
        if p.is_empty() || p.len() > 255 {
            return Err(config_err(format!(
                "invalid ALPN protocol {p:?}: each protocol must be 1 to 255 bytes"
            )));
        }
    }
    Ok(alpn)
}

/// Picks the chain for the client's SNI name; `default` serves clients that send no name or
/// one no chain matches.
#[derive(Debug)]
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
    default: usize,
    /// For each chain, the first chain valid for the same names (`keyinfo::names_der`).
    groups: Vec<usize>,
    /// The suites this configuration negotiates (to tell which key types a client can use).
    suites: Vec<SupportedCipherSuite>,
}

impl SniResolver {
    /// Whether the client can use `ck`: it accepts a signature scheme of its key, and offers a
    /// suite usable with it (TLS 1.2 suites name the key type; TLS 1.3 suites do not).
    fn usable(&self, ck: &CertifiedKey, hello: &ClientHello<'_>) -> bool {
        if ck.key.choose_scheme(hello.signature_schemes()).is_none() {
            return false;
        }
        let algorithm = ck.key.algorithm();
        hello.cipher_suites().iter().any(|offered| {
            self.suites
                .iter()
                .any(|s| s.suite() == *offered && s.usable_for_signature_algorithm(algorithm))
        })
    }
}

/// Whether a chain's leaf is valid for `name` (every DNS SAN, wildcards, IP SANs).
fn leaf_matches(ck: &CertifiedKey, name: &ServerName<'_>) -> bool {
    let Some(leaf) = ck.cert.first() else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .map(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
        .unwrap_or(false)
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut chosen = self.default;
        if self.keys.len() > 1 {
            if let Some(sn) = client_hello
                .server_name()
                .and_then(|name| ServerName::try_from(name).ok())
            {
                if let Some(i) = self.keys.iter().position(|ck| leaf_matches(ck, &sn)) {
                    chosen = i;
                }
            }
            // Chains for the same names (RSA and ECDSA, as OpenSSL keeps one per key type):
            // the first the client can use.
            if !self.usable(&self.keys[chosen], &client_hello) {
                let group = self.groups[chosen];
                if let Some(i) = (0..self.keys.len())
                    .find(|&i| self.groups[i] == group && self.usable(&self.keys[i], &client_hello))
                {
                    chosen = i;
                }
            }
        }
        self.keys.get(chosen).cloned()
    }
}

/// Server side configuration.
#[pyclass(frozen, name = "RustlsServerConfig", module = "unitls._native")]
pub struct ServerConfig {
    /// The configuration with chain `i` as the default (index 0: the first chain): a client
    /// that connects to an IP address sends no SNI, so the address it reached picks the chain.
    by_default: Vec<Arc<rustls::ServerConfig>>,
    /// `by_default` without ALPN, for clients that offer none of our protocols (empty when we
    /// have none): the handshake then completes without ALPN, as with OpenSSL.
    without_alpn: Vec<Arc<rustls::ServerConfig>>,
    keys: Vec<Arc<CertifiedKey>>,
}

fn rustls_connection(session: RustlsSession) -> Connection {
    Connection::new("rustls", Box::new(session))
}

/// Whether the client offered no ALPN or at least one of `ours`.
fn alpn_overlaps(hello: &ClientHello<'_>, ours: &[Vec<u8>]) -> bool {
    match hello.alpn() {
        None => true,
        Some(mut offered) => offered.any(|p| ours.iter().any(|o| o.as_slice() == p)),
    }
}

#[pymethods]
impl ServerConfig {
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
        let (provider, versions) =
            build_provider(cipher_suites.as_deref(), &versions, groups.as_deref())?;
        if chains.is_empty() {
            return Err(config_err(
                "a server needs at least one certificate chain and its private key",
            ));
        }
        let mut keys = Vec::with_capacity(chains.len());
        for (i, (certs, key)) in chains.iter().enumerate() {
            let what = format!("chains[{i}]");
            let blobs = certs
                .iter()
                .enumerate()
                .map(|(j, o)| bytes_of(o, &format!("{what} certificate[{j}]")))
                .collect::<PyResult<Vec<_>>>()?;
            let key = bytes_of(key, &format!("{what} key"))?;
            keys.push(Arc::new(certified_key(&blobs, &key, &provider, &what)?));
        }
        let client_ca = extract_blobs(client_ca_certs, "client_ca_certs")?;

        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| config_err(format!("invalid protocol configuration: {e}")))?;
        let builder = match client_ca {
            Some(ca) => {
                let store = trust_store(&ca, "client_ca_certs")?;
                if store.is_empty() {
                    return Err(config_err(
                        "client_ca_certs is empty: pass the CA certificates that issue client \
                         certificates, or None for no client authentication",
                    ));
                }
                let vb =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone());
                let vb = if require_client_cert {
                    vb
                } else {
                    vb.allow_unauthenticated()
                };
                let verifier = vb.build().map_err(|e| {
                    config_err(format!("cannot build the client certificate verifier: {e}"))
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None if require_client_cert => {
                return Err(config_err(
                    "require_client_cert needs client_ca_certs: pass the CA certificates that \
                     issue client certificates",
                ))
            }
            None => builder.with_no_client_auth(),
        };
        let names: Vec<Option<Vec<u8>>> = keys
            .iter()
            .map(|ck| ck.cert.first().and_then(|leaf| names_der(leaf)))
            .collect();
        let groups: Vec<usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| match n {
                Some(_) => names.iter().position(|m| m == n).unwrap_or(i),
                None => i,
            })
            .collect();
        let suites: Vec<SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .filter(|s| versions.iter().any(|v| v.version == s.version().version))
            .copied()
            .collect();
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver {
            keys: keys.clone(),
            default: 0,
            groups: groups.clone(),
            suites: suites.clone(),
        }));
        config.alpn_protocols = check_alpn(alpn)?;
        if let Some(path) = keylog_path {
            config.key_log = keylog::open(path)?;
        }
        if session_tickets {
            config.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| config_err(format!("cannot create the session ticketer: {e}")))?;
        } else {
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        let inner = Arc::new(config);
        let mut by_default = vec![inner.clone()];
        for default in 1..keys.len() {
            let mut variant = (*inner).clone();
            variant.cert_resolver = Arc::new(SniResolver {
                keys: keys.clone(),
                default,
                groups: groups.clone(),
                suites: suites.clone(),
            });
            by_default.push(Arc::new(variant));
        }
        let without_alpn = if inner.alpn_protocols.is_empty() {
            Vec::new()
        } else {
            by_default
                .iter()
                .map(|c| {
                    let mut variant = (**c).clone();
                    variant.alpn_protocols.clear();
                    Arc::new(variant)
                })
                .collect()
        };
        Ok(Self {
            by_default,
            without_alpn,
            keys,
        })
    }

    /// A new server connection.
    #[pyo3(signature = (local_address=None))]
    fn new_connection(&self, local_address: Option<&str>) -> PyResult<Connection> {
        // Without SNI, the chain whose leaf names the address the client connected to is the
        // default; the first chain otherwise.
        let index = local_address
            .filter(|_| self.keys.len() > 1)
            .and_then(|addr| addr.parse::<std::net::IpAddr>().ok())
            .and_then(|ip| {
                let name = ServerName::IpAddress(ip.into());
                self.keys.iter().position(|ck| leaf_matches(ck, &name))
            })
            .unwrap_or(0);
        let config = self.by_default[index].clone();
        if let Some(fallback) = self.without_alpn.get(index).cloned() {
            let choose: ConfigChooser = Arc::new(move |hello: &ClientHello<'_>| {
                if alpn_overlaps(hello, &config.alpn_protocols) {
                    config.clone()
                } else {
                    fallback.clone()
                }
            });
            return Ok(rustls_connection(RustlsSession::accepting(choose)));
        }
        let conn = rustls::ServerConnection::new(config)
            .map_err(|e| config_err(format!("cannot start a server connection: {e}")))?;
        Ok(rustls_connection(RustlsSession::new(
            rustls::Connection::Server(conn),
        )))
    }
}

/// IANA ids of the cipher suites rustls (ring provider) supports, in its preference order.
#[pyfunction]
pub fn supported_cipher_suites() -> Vec<u16> {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .map(|s| u16::from(s.suite()))
        .collect()
}
