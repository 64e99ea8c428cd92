//! Certificates, keys and trust anchors from memory, and the verification of a peer's chain.
//!
//! - Certificates become NSS *temporary* certificates (`CERT_NewTempCertificate`, never written
//!   anywhere). Private keys are imported as PKCS#8 into the internal slot as session objects
//!   (`isPerm = false`); SEC1 and PKCS#1 keys are wrapped into PKCS#8 here first.
//! - What NSS 3.87 cannot use is refused at configuration: Ed25519/Ed448 and DSA keys, RSA keys
//!   under 2048 bits, curves other than P-256/P-384/P-521.
//! - Verification (in an `SSL_AuthCertificateHook`): `CERT_PKIXVerifyCert` with the configured
//!   anchors as the only trust anchors. NSS builds paths from every temporary certificate the
//!   process holds, so a chain NSS built with a certificate the peer did not send (and that is
//!   not an anchor) is refused as an unknown issuer: verdicts do not depend on what the process
//!   saw earlier, and match the other engines. Names are checked here with webpki (SAN only,
//!   wildcards only as the whole left-most label, IP SANs): NSS's own check falls back to the
//!   subject CN and allows partial wildcards, which unitls refuses everywhere.

use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, InconsistentKeys};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::ffi::{self, *};
use crate::config::{looks_like_pem, parse_certs};
use crate::errors::{certificate_reason, config_err};
use crate::keyinfo::{key_kind, pem_problem, tlv, why_unusable, KeyKind};

/// The curves NSS signs TLS handshakes with.
pub const NSS_CURVES: &[&str] = &["P-256", "P-384", "P-521"];

/// A reference to an NSS certificate (released on drop).
pub struct Cert(*mut CERTCertificate);

// SAFETY: NSS certificates are reference counted under NSS's own locks and never mutated by us.
unsafe impl Send for Cert {}
unsafe impl Sync for Cert {}

impl Cert {
    pub fn ptr(&self) -> *mut CERTCertificate {
        self.0
    }

    pub fn der(&self) -> &[u8] {
        // SAFETY: we hold a reference, so the certificate is alive.
        unsafe { cert_der(self.0) }
    }

    /// A new reference for NSS to own (client certificate hook).
    pub fn dup(&self) -> *mut CERTCertificate {
        // SAFETY: a live certificate.
        unsafe { (ffi::api().CERT_DupCertificate)(self.0) }
    }
}

impl Clone for Cert {
    fn clone(&self) -> Self {
        Cert(self.dup())
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        // SAFETY: releases our reference.
        unsafe { (ffi::api().CERT_DestroyCertificate)(self.0) }
    }
}

/// A private key in NSS's internal slot (a session object, destroyed on drop).
pub struct Key(*mut SECKEYPrivateKey);

// SAFETY: NSS keys are used read-only (signing) under the token's own locking.
unsafe impl Send for Key {}
unsafe impl Sync for Key {}

impl Key {
    pub fn ptr(&self) -> *mut SECKEYPrivateKey {
        self.0
    }

    /// A new reference for NSS to own (client certificate hook).
    pub fn copy(&self) -> *mut SECKEYPrivateKey {
        // SAFETY: a live key.
        unsafe { (ffi::api().SECKEY_CopyPrivateKey)(self.0) }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: releases our key object.
        unsafe { (ffi::api().SECKEY_DestroyPrivateKey)(self.0) }
    }
}

/// `name (text)` of an NSS error code, for messages.
pub fn describe(code: PRErrorCode) -> String {
    let (name, text) = ffi::error_text(code);
    if text.is_empty() {
        name
    } else {
        format!("{name}: {text}")
    }
}

/// An NSS temporary certificate for `der`.
pub fn temp_cert(der: &[u8], what: &str) -> PyResult<Cert> {
    let api = ffi::api();
    let mut item = SECItem::borrowed(der);
    // SAFETY: copyDER = true, so NSS keeps its own copy of the bytes.
    let cert = unsafe {
        (api.CERT_NewTempCertificate)(
            (api.CERT_GetDefaultCertDB)(),
            &mut item,
            std::ptr::null_mut(),
            PR_FALSE,
            PR_TRUE,
        )
    };
    if cert.is_null() {
        let code = ffi::last_error();
        let why = if code == SEC_ERROR_REUSED_ISSUER_AND_SERIAL {
            "NSS already holds a different certificate with the same issuer and serial number \
             in this process (NSS identifies certificates by issuer and serial number)"
                .to_string()
        } else {
            format!("not a valid X.509 certificate ({})", describe(code))
        };
        return Err(config_err(format!("{what}: {why}")));
    }
    Ok(Cert(cert))
}

/// NSS certificates for items that are PEM blobs (one or more certificates) or DER.
pub fn temp_certs(items: &[Vec<u8>], what: &str) -> PyResult<Vec<Cert>> {
    let mut out = Vec::new();
    for (i, data) in items.iter().enumerate() {
        let item = format!("{what}[{i}]");
        for (j, der) in parse_certs(data, &item)?.iter().enumerate() {
            out.push(temp_cert(
                der.as_ref(),
                &format!("{item} certificate #{j}"),
            )?);
        }
    }
    Ok(out)
}

/// A list of trust anchors (`CERTCertList`) and their DER, for `CERT_PKIXVerifyCert`.
pub struct Anchors {
    list: *mut CERTCertList,
    ders: HashSet<Vec<u8>>,
    /// The most name-constraint subtrees any anchor has (see `NAME_CONSTRAINT_BUDGET`).
    max_constraints: usize,
}

// SAFETY: the list is built once and only read afterwards (PKIX copies what it needs).
unsafe impl Send for Anchors {}
unsafe impl Sync for Anchors {}

impl Anchors {
    pub fn new(certs: Vec<Cert>) -> PyResult<Self> {
        let api = ffi::api();
        // SAFETY: a fresh list; each certificate reference moves into it.
        let list = unsafe { (api.CERT_NewCertList)() };
        if list.is_null() {
            return Err(config_err("NSS could not allocate a certificate list"));
        }
        let mut anchors = Anchors {
            list,
            ders: HashSet::new(),
            max_constraints: 0,
        };
        for cert in certs {
            if !anchors.ders.insert(cert.der().to_vec()) {
                continue;
            }
            let constraints = name_counts(cert.der()).map_or(0, |c| c.constraints);
            anchors.max_constraints = anchors.max_constraints.max(constraints);
            let ptr = cert.ptr();
            std::mem::forget(cert); // the list takes this reference
                                    // SAFETY: both live; on failure we still own the reference and release it.
            if unsafe { (api.CERT_AddCertToListTail)(list, ptr) } != SEC_SUCCESS {
                unsafe { (api.CERT_DestroyCertificate)(ptr) };
                return Err(config_err("NSS could not add a trust anchor to its list"));
            }
        }
        Ok(anchors)
    }

    pub fn is_empty(&self) -> bool {
        self.ders.is_empty()
    }
}

impl Drop for Anchors {
    fn drop(&mut self) {
        // SAFETY: frees the list and its certificate references.
        unsafe { (ffi::api().CERT_DestroyCertList)(self.list) }
    }
}

/// The system trust store as NSS anchors, and the errors met loading it.
pub struct SystemRoots {
    pub certs: Vec<Cert>,
    /// All of them as one anchor list (the common case: no other anchors).
    pub anchors: Option<Arc<Anchors>>,
    pub errors: String,
}

/// The system trust store, loaded once per location: SSL_CERT_FILE / SSL_CERT_DIR (honoured by
/// rustls-native-certs, as for the rustls engine) are the cache key. Certificates NSS cannot
/// parse are skipped, as the other engines skip them.
pub fn system_roots() -> PyResult<Arc<SystemRoots>> {
    type Key = (Option<std::ffi::OsString>, Option<std::ffi::OsString>);
    static ROOTS: Mutex<Option<(Key, Arc<SystemRoots>)>> = Mutex::new(None);
    let key: Key = (
        std::env::var_os("SSL_CERT_FILE"),
        std::env::var_os("SSL_CERT_DIR"),
    );
    let mut cached = ROOTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((k, roots)) = cached.as_ref() {
        if *k == key {
            return Ok(roots.clone());
        }
    }
    let res = rustls_native_certs::load_native_certs();
    let errors = res
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let certs: Vec<Cert> = res
        .certs
        .iter()
        .filter_map(|der| temp_cert(der.as_ref(), "system root").ok())
        .collect();
    let anchors = if certs.is_empty() {
        None
    } else {
        Some(Arc::new(Anchors::new(
            certs.iter().map(Cert::clone).collect(),
        )?))
    };
    let roots = Arc::new(SystemRoots {
        certs,
        anchors,
        errors,
    });
    *cached = Some((key, roots.clone()));
    Ok(roots)
}

// -- names and name constraints ----------------------------------------------------------------

/// NSS's name-constraint check (libpkix) compares every name of a certificate with every
/// constraint of its issuers, allocating as it goes: x509-limbo's `nc-dos` chains (2048 names
/// against 4096 constraints) take it past 4 GB and then to a crash. Chains over this many
/// comparisons are refused before NSS sees them, as webpki (rustls) refuses them with the same
/// budget.
const NAME_CONSTRAINT_BUDGET: usize = 250_000;

/// How many names a certificate has (subject attributes and SAN entries) and how many
/// name-constraint subtrees (permitted and excluded).
struct NameCounts {
    names: usize,
    constraints: usize,
}

fn count_items(mut data: &[u8]) -> usize {
    let mut n = 0;
    while let Some((_, _, rest)) = tlv(data) {
        n += 1;
        data = rest;
    }
    n
}

/// Read the counts from a certificate's DER (`None`: not parseable; NSS will say why).
fn name_counts(der: &[u8]) -> Option<NameCounts> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut fields = Vec::new();
    let mut rest = tbs;
    while let Some((tag, contents, next)) = tlv(rest) {
        fields.push((tag, contents));
        rest = next;
    }
    // [0] version?, serial, signature, issuer, validity, subject, spki, ..., [3] extensions
    let skip = usize::from(fields.first()?.0 == 0xA0);
    let subject = fields.get(skip + 4)?.1;
    let mut counts = NameCounts {
        names: count_items(subject),
        constraints: 0,
    };
    let Some((_, exts)) = fields.iter().find(|(tag, _)| *tag == 0xA3) else {
        return Some(counts);
    };
    let (0x30, mut list, _) = tlv(exts)? else {
        return None;
    };
    while let Some((0x30, ext, next)) = tlv(list) {
        list = next;
        let (0x06, oid, mut body) = tlv(ext)? else {
            continue;
        };
        if let Some((0x01, _, after)) = tlv(body) {
            body = after; // the critical flag
        }
        let (0x04, value, _) = tlv(body)? else {
            continue;
        };
        let (0x30, items, _) = tlv(value)? else {
            continue;
        };
        match oid {
            [0x55, 0x1D, 0x11] => counts.names += count_items(items),
            [0x55, 0x1D, 0x1E] => {
                let mut subtrees = items;
                while let Some((_, trees, next)) = tlv(subtrees) {
                    counts.constraints += count_items(trees);
                    subtrees = next;
                }
            }
            _ => {}
        }
    }
    Some(counts)
}

/// Refuse a chain whose name-constraint check would be too costly for NSS.
fn check_constraint_budget(sent: &[&[u8]], anchors: &Anchors) -> Result<(), Rejection> {
    let counts: Vec<NameCounts> = sent.iter().filter_map(|d| name_counts(d)).collect();
    let names = counts.iter().map(|c| c.names).max().unwrap_or(0);
    let constraints = counts
        .iter()
        .map(|c| c.constraints)
        .chain([anchors.max_constraints])
        .max()
        .unwrap_or(0);
    if names.saturating_mul(constraints) > NAME_CONSTRAINT_BUDGET {
        return Err(Rejection {
            code: SEC_ERROR_CERT_NOT_IN_NAME_SPACE,
            reason: format!(
                "too many names to check against name constraints ({names} names x \
                 {constraints} constraints; the limit is {NAME_CONSTRAINT_BUDGET} comparisons)"
            ),
        });
    }
    Ok(())
}

// -- private keys ------------------------------------------------------------------------------

fn der_item(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// PKCS#8 PrivateKeyInfo around a key of `algorithm` (an AlgorithmIdentifier's contents).
fn pkcs8(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = der_item(0x02, &[0]);
    body.extend(der_item(0x30, algorithm));
    body.extend(der_item(0x04, key));
    der_item(0x30, &body)
}

const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];

fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let mut alg = der_item(0x06, OID_RSA_ENCRYPTION);
    alg.extend(der_item(0x05, &[]));
    pkcs8(&alg, pkcs1)
}

/// SEC1 ECPrivateKey -> PKCS#8 (the curve comes from the key's [0] parameters).
fn sec1_to_pkcs8(sec1: &[u8]) -> Option<Vec<u8>> {
    let (0x30, body, _) = tlv(sec1)? else {
        return None;
    };
    let (0x02, _version, rest) = tlv(body)? else {
        return None;
    };
    let (0x04, _key, mut rest) = tlv(rest)? else {
        return None;
    };
    while let Some((tag, contents, next)) = tlv(rest) {
        if tag == 0xA0 {
            if let Some((0x06, curve, _)) = tlv(contents) {
                let mut alg = der_item(0x06, OID_EC_PUBLIC_KEY);
                alg.extend(der_item(0x06, curve));
                return Some(pkcs8(&alg, sec1));
            }
        }
        rest = next;
    }
    None
}

/// The key as PKCS#8 DER, from PEM (PKCS#8 / SEC1 / PKCS#1) or DER in any of those.
fn key_to_pkcs8(data: &[u8], what: &str) -> PyResult<Vec<u8>> {
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
        return match der {
            PrivateKeyDer::Pkcs8(k) => Ok(k.secret_pkcs8_der().to_vec()),
            PrivateKeyDer::Pkcs1(k) => Ok(pkcs1_to_pkcs8(k.secret_pkcs1_der())),
            PrivateKeyDer::Sec1(k) => sec1_to_pkcs8(k.secret_sec1_der()).ok_or_else(|| {
                config_err(format!(
                    "{what}: the EC private key names no curve; store it as PKCS#8"
                ))
            }),
            _ => Err(config_err(format!(
                "{what}: unsupported private key format"
            ))),
        };
    }
    // DER: tell PKCS#8, PKCS#1 and SEC1 apart by what follows the version.
    let second = tlv(data)
        .filter(|(tag, _, _)| *tag == 0x30)
        .and_then(|(_, body, _)| tlv(body))
        .filter(|(tag, _, _)| *tag == 0x02)
        .and_then(|(_, _, rest)| tlv(rest))
        .map(|(tag, _, _)| tag);
    match second {
        Some(0x30) => Ok(data.to_vec()),
        Some(0x02) => Ok(pkcs1_to_pkcs8(data)),
        Some(0x04) => sec1_to_pkcs8(data).ok_or_else(|| {
            config_err(format!(
                "{what}: the EC private key names no curve; store it as PKCS#8"
            ))
        }),
        _ => Err(config_err(format!(
            "{what}: not a usable private key: the data is neither PEM nor a DER PKCS#8, SEC1 \
             or PKCS#1 key"
        ))),
    }
}

/// Why NSS 3.87 cannot sign TLS handshakes with a key of this kind, if it cannot.
fn nss_refuses(der: &[u8]) -> Option<String> {
    let kind = key_kind(der)?;
    match kind {
        KeyKind::Ed25519 | KeyKind::Ed448 => Some(format!(
            "{} keys are not supported by NSS 3.87 (it cannot import them or sign TLS \
             handshakes with them): use an ECDSA (P-256, P-384, P-521) or RSA key",
            kind.describe()
        )),
        _ => why_unusable(der, "NSS", NSS_CURVES),
    }
}

/// Whether a PKCS#8 EC key leaves out its public key (the optional [1] of SEC1's
/// ECPrivateKey): NSS cannot import such keys.
fn ec_key_lacks_public(pkcs8: &[u8]) -> bool {
    let inner = tlv(pkcs8)
        .filter(|(tag, _, _)| *tag == 0x30)
        .and_then(|(_, body, _)| tlv(body))
        .and_then(|(_, _, rest)| tlv(rest))
        .filter(|(tag, alg, _)| {
            *tag == 0x30
                && alg
                    .windows(OID_EC_PUBLIC_KEY.len())
                    .any(|w| w == OID_EC_PUBLIC_KEY)
        })
        .and_then(|(_, _, rest)| tlv(rest))
        .filter(|(tag, _, _)| *tag == 0x04)
        .map(|(_, sec1, _)| sec1);
    let Some((0x30, mut fields, _)) = inner.and_then(tlv) else {
        return false;
    };
    while let Some((tag, _, next)) = tlv(fields) {
        if tag == 0xA1 {
            return false;
        }
        fields = next;
    }
    true
}

/// Import a private key (PEM or DER; PKCS#8, SEC1 or PKCS#1) into NSS's internal slot.
pub fn import_key(data: &[u8], what: &str) -> PyResult<(Key, Vec<u8>)> {
    let der = key_to_pkcs8(data, what)?;
    if let Some(why) = nss_refuses(&der) {
        return Err(config_err(format!("{what}: {why}")));
    }
    if ec_key_lacks_public(&der) {
        return Err(config_err(format!(
            "{what}: the EC private key does not include its public key, which NSS needs to \
             import it: export the key with its public key (e.g. `openssl pkey -in KEY -out \
             FULL_KEY`)"
        )));
    }
    let api = ffi::api();
    let mut item = SECItem::borrowed(&der);
    let mut key: *mut SECKEYPrivateKey = std::ptr::null_mut();
    // SAFETY: a temporary (isPerm = false), sensitive (isPrivate = true) import; NSS copies
    // the DER. The slot reference is released right after.
    let rv = unsafe {
        let slot = (api.PK11_GetInternalSlot)();
        if slot.is_null() {
            return Err(config_err("NSS has no internal slot to hold private keys"));
        }
        let rv = (api.PK11_ImportDERPrivateKeyInfoAndReturnKey)(
            slot,
            &mut item,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            PR_FALSE,
            PR_TRUE,
            KU_ALL,
            &mut key,
            std::ptr::null_mut(),
        );
        (api.PK11_FreeSlot)(slot);
        rv
    };
    if rv != SEC_SUCCESS || key.is_null() {
        let code = ffi::last_error();
        return Err(config_err(format!(
            "{what}: NSS cannot import this private key ({}); it takes ECDSA (P-256, P-384, \
             P-521) and RSA keys",
            describe(code)
        )));
    }
    Ok((Key(key), der))
}

/// Refuse a key that does not belong to the leaf certificate. Checked with ring (as the rustls
/// engine does); keys ring cannot load (P-521) are left to NSS.
pub fn check_key_matches(leaf: &[u8], pkcs8: &[u8], what: &str) -> PyResult<()> {
    let provider = rustls::crypto::ring::default_provider();
    let Ok(signing) = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(pkcs8.to_vec().into()))
    else {
        return Ok(());
    };
    let ck = CertifiedKey::new(vec![CertificateDer::from(leaf.to_vec())], signing);
    match ck.keys_match() {
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(config_err(format!(
                "{what}: the private key does not match the certificate (the leaf, first in the \
                 chain); pass the key that belongs to that certificate"
            )))
        }
        _ => Ok(()),
    }
}

// -- verification ------------------------------------------------------------------------------

/// Why the peer's certificate was refused: the NSS error that picks the alert, and our reason.
#[derive(Clone, Debug)]
pub struct Rejection {
    pub code: PRErrorCode,
    pub reason: String,
}

/// What to check a peer's certificate against.
pub struct Policy {
    pub anchors: Arc<Anchors>,
    /// `certificateUsageSSLServer` (clients verifying servers) or `...SSLClient`.
    pub usage: i64,
    /// The name the certificate must be valid for (clients with hostname checks).
    pub name: Option<ServerName<'static>>,
}

fn reason_for(code: PRErrorCode, leaf: *mut CERTCertificate) -> String {
    match code {
        SEC_ERROR_UNKNOWN_ISSUER | SEC_ERROR_UNTRUSTED_ISSUER | SEC_ERROR_UNTRUSTED_CERT => {
            "unknown issuer (self-signed or untrusted CA)".into()
        }
        SEC_ERROR_EXPIRED_CERTIFICATE => match validity(leaf) {
            Some(Validity::NotYet) => "certificate not yet valid".into(),
            _ => "certificate expired".into(),
        },
        SEC_ERROR_EXPIRED_ISSUER_CERTIFICATE => {
            "a CA certificate in the chain expired or is not yet valid".into()
        }
        SEC_ERROR_REVOKED_CERTIFICATE => "certificate revoked".into(),
        SEC_ERROR_BAD_SIGNATURE => "bad certificate signature".into(),
        SEC_ERROR_INADEQUATE_KEY_USAGE | SEC_ERROR_INADEQUATE_CERT_TYPE => {
            "certificate not allowed for this purpose (extended key usage)".into()
        }
        SEC_ERROR_CA_CERT_INVALID => "a leaf (non-CA) certificate was used as an issuer".into(),
        SEC_ERROR_PATH_LEN_CONSTRAINT_INVALID => {
            "the chain violates a path length constraint".into()
        }
        SEC_ERROR_CERT_NOT_IN_NAME_SPACE => {
            "the certificate violates its issuer's name constraints".into()
        }
        SEC_ERROR_UNKNOWN_CRITICAL_EXTENSION => {
            "certificate has an unhandled critical extension".into()
        }
        SEC_ERROR_CERT_SIGNATURE_ALGORITHM_DISABLED => {
            "unsupported certificate signature algorithm".into()
        }
        SEC_ERROR_EXTENSION_VALUE_INVALID | SEC_ERROR_CERT_USAGES_INVALID => {
            "certificate has an invalid extension".into()
        }
        _ => {
            let (name, text) = ffi::error_text(code);
            if text.is_empty() {
                name
            } else {
                text.trim_end_matches('.').to_lowercase()
            }
        }
    }
}

enum Validity {
    NotYet,
    Expired,
}

/// Whether `cert` is outside its validity period now, exactly (NSS's own checks accept
/// certificates that become valid within a day: its "pending slop").
fn validity(cert: *mut CERTCertificate) -> Option<Validity> {
    let api = ffi::api();
    let (mut not_before, mut not_after) = (0, 0);
    // SAFETY: a live certificate; two PRTime outputs.
    unsafe {
        if (api.CERT_GetCertTimes)(cert, &mut not_before, &mut not_after) != SEC_SUCCESS {
            return Some(Validity::Expired);
        }
        let now = (api.PR_Now)();
        if now < not_before {
            Some(Validity::NotYet)
        } else if now > not_after {
            Some(Validity::Expired)
        } else {
            None
        }
    }
}

/// The name check (SAN only, like webpki everywhere in unitls).
fn check_name(leaf: &[u8], name: &ServerName<'static>) -> Result<(), Rejection> {
    let cert = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&cert).map_err(|e| Rejection {
        code: SSL_ERROR_BAD_CERT_DOMAIN,
        reason: format!("the certificate's names cannot be read ({e:?})"),
    })?;
    match ee.verify_is_valid_for_subject_name(name) {
        Ok(()) => Ok(()),
        Err(webpki::Error::CertNotValidForName(ctx)) => Err(Rejection {
            code: SSL_ERROR_BAD_CERT_DOMAIN,
            reason: certificate_reason(&CertificateError::NotValidForNameContext {
                expected: ctx.expected,
                presented: ctx.presented,
            }),
        }),
        Err(_) => Err(Rejection {
            code: SSL_ERROR_BAD_CERT_DOMAIN,
            reason: certificate_reason(&CertificateError::NotValidForName),
        }),
    }
}

/// Verify the certificates the peer of `fd` sent.
///
/// # Safety
/// `fd` must be the SSL socket whose certificate hook is running.
pub unsafe fn verify_peer(fd: *mut PRFileDesc, policy: &Policy) -> Result<(), Rejection> {
    let api = ffi::api();
    let chain = (api.SSL_PeerCertificateChain)(fd);
    let certs = cert_list_iter(chain);
    let result = verify_chain(&certs, policy);
    if !chain.is_null() {
        (api.CERT_DestroyCertList)(chain);
    }
    result
}

/// A leaf that is itself one of the anchors (a self-signed certificate trusted as such).
/// libpkix cannot build a path whose target is its trust anchor; OpenSSL and webpki accept such
/// a leaf, so it is checked as rustls checks it: with webpki, the leaf as its own anchor
/// (validity, extended key usage, not a CA).
fn verify_anchor_leaf(leaf: &[u8], usage: i64) -> Result<(), Rejection> {
    let der = CertificateDer::from(leaf);
    let reject = |e: webpki::Error| {
        let reason = match &e {
            webpki::Error::CertExpired { .. } => "certificate expired".to_string(),
            webpki::Error::CertNotValidYet { .. } => "certificate not yet valid".to_string(),
            _ => certificate_reason(&CertificateError::Other(rustls::OtherError(Arc::new(
                e.clone(),
            )))),
        };
        Rejection {
            code: SEC_ERROR_UNTRUSTED_CERT,
            reason,
        }
    };
    let anchor = webpki::anchor_from_trusted_cert(&der).map_err(reject)?;
    let ee = webpki::EndEntityCert::try_from(&der).map_err(reject)?;
    let eku = if usage == CERTIFICATE_USAGE_SSL_CLIENT {
        webpki::KeyUsage::client_auth()
    } else {
        webpki::KeyUsage::server_auth()
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        rustls_pki_types::UnixTime::now(),
        eku,
        None,
        None,
    )
    .map(|_| ())
    .map_err(reject)
}

unsafe fn verify_chain(certs: &[*mut CERTCertificate], policy: &Policy) -> Result<(), Rejection> {
    let api = ffi::api();
    let Some(&leaf) = certs.first() else {
        return Err(Rejection {
            code: SSL_ERROR_NO_CERTIFICATE,
            reason: "peer sent no certificate".into(),
        });
    };
    if policy.anchors.ders.contains(cert_der(leaf)) {
        verify_anchor_leaf(cert_der(leaf), policy.usage)?;
        if let Some(name) = &policy.name {
            check_name(cert_der(leaf), name)?;
        }
        return Ok(());
    }
    let sent: HashSet<&[u8]> = certs.iter().map(|c| cert_der(*c)).collect();
    let sent_list: Vec<&[u8]> = certs.iter().map(|c| cert_der(*c)).collect();
    check_constraint_budget(&sent_list, &policy.anchors)?;
    let mut params_in = [
        CertValParam::new(CERT_PI_TRUST_ANCHORS),
        CertValParam::new(CERT_PI_USE_ONLY_TRUST_ANCHORS),
        CertValParam::new(CERT_PI_USE_AIA_CERT_FETCH),
        CertValParam::new(CERT_PI_REVOCATION_FLAGS),
        CertValParam::new(CERT_PI_END),
    ];
    params_in[0].pointer = policy.anchors.list as *const c_void;
    params_in[1].scalar = 1;
    params_in[2].scalar = 0;
    // PKIX refuses trust anchors without a revocation policy (SEC_ERROR_INVALID_ARGS); this one
    // checks only CRLs already held in memory, never the network.
    params_in[3].pointer = (api.CERT_GetClassicOCSPDisabledPolicy)();
    let mut params_out = [
        CertValParam::new(CERT_PO_CERT_LIST),
        CertValParam::new(CERT_PO_END),
    ];
    let rv = (api.CERT_PKIXVerifyCert)(
        leaf,
        policy.usage,
        params_in.as_mut_ptr(),
        params_out.as_mut_ptr(),
        std::ptr::null_mut(),
    );
    let code = if rv == SEC_SUCCESS {
        0
    } else {
        ffi::last_error()
    };
    let built = params_out[0].pointer as *mut CERTCertList;
    let chain = cert_list_iter(built);
    let outside = chain
        .iter()
        .any(|c| !sent.contains(cert_der(*c)) && !policy.anchors.ders.contains(cert_der(*c)));
    // Validity of the certificates the peer sent (not of the anchors, as webpki), without slop.
    let mut timing = None;
    for (i, c) in chain.iter().enumerate() {
        if policy.anchors.ders.contains(cert_der(*c)) {
            continue;
        }
        let (reason, code) = match (validity(*c), i) {
            (None, _) => continue,
            (Some(Validity::NotYet), 0) => {
                ("certificate not yet valid", SEC_ERROR_EXPIRED_CERTIFICATE)
            }
            (Some(Validity::Expired), 0) => ("certificate expired", SEC_ERROR_EXPIRED_CERTIFICATE),
            (Some(_), _) => (
                "a CA certificate in the chain expired or is not yet valid",
                SEC_ERROR_EXPIRED_ISSUER_CERTIFICATE,
            ),
        };
        timing = Some(Rejection {
            code,
            reason: reason.into(),
        });
        break;
    }
    if !built.is_null() {
        (api.CERT_DestroyCertList)(built);
    }
    if rv != SEC_SUCCESS {
        return Err(Rejection {
            code,
            reason: reason_for(code, leaf),
        });
    }
    if let Some(rejection) = timing {
        return Err(rejection);
    }
    if outside {
        return Err(Rejection {
            code: SEC_ERROR_UNKNOWN_ISSUER,
            reason: "unknown issuer (self-signed or untrusted CA): the chain is incomplete (NSS \
                     completed it with a certificate the peer did not send)"
                .into(),
        });
    }
    if let Some(name) = &policy.name {
        check_name(cert_der(leaf), name)?;
    }
    Ok(())
}
