//! `Failure` (an engine failure as plain data) and its mapping onto `unitls._errors`; the
//! mapping of rustls' own errors.

use pyo3::PyErr;
use rustls::{AlertDescription, CertRevocationListError, CertificateError, InvalidMessage};

pyo3::import_exception!(unitls._errors, TLSError);
pyo3::import_exception!(unitls._errors, WantReadError);
pyo3::import_exception!(unitls._errors, WantWriteError);
pyo3::import_exception!(unitls._errors, TLSConnectionError);
pyo3::import_exception!(unitls._errors, TLSTimeoutError);
pyo3::import_exception!(unitls._errors, RaggedEOF);
pyo3::import_exception!(unitls._errors, ConfigurationError);
pyo3::import_exception!(unitls._errors, CertificateVerificationError);
pyo3::import_exception!(unitls._errors, HandshakeClosedError);
pyo3::import_exception!(unitls._errors, ProtocolError);

/// A failure, kept as plain Rust data so it can be stored (a fatal error is raised again by
/// every later call) and built without the GIL.
#[derive(Clone, Debug)]
pub enum Failure {
    WantRead(&'static str),
    Ragged(&'static str),
    HandshakeClosed(String),
    Config(String),
    /// `alert`: set when the peer rejected *our* certificate with this fatal alert.
    Certificate {
        reason: String,
        message: String,
        alert: Option<String>,
    },
    /// `alert`: the fatal alert the peer sent, if that is what ended the connection.
    Protocol {
        message: String,
        alert: Option<String>,
    },
    Generic(String),
    /// A call the connection's state does not allow (writing after close_notify): not fatal.
    Usage(String),
    /// A bug (a panic in the engine): the connection cannot be used any more.
    Internal(String),
}

impl Failure {
    pub fn protocol(message: impl Into<String>) -> Self {
        Failure::Protocol {
            message: message.into(),
            alert: None,
        }
    }

    /// Everything but `WantRead` ends the connection.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Failure::WantRead(_) | Failure::Usage(_))
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        match f {
            Failure::WantRead(m) => WantReadError::new_err(m),
            Failure::Ragged(m) => RaggedEOF::new_err(m),
            Failure::HandshakeClosed(m) => HandshakeClosedError::new_err(m),
            Failure::Config(m) => ConfigurationError::new_err(m),
            Failure::Certificate {
                reason,
                message,
                alert,
            } => CertificateVerificationError::new_err((reason, message, alert)),
            Failure::Protocol { message, alert } => ProtocolError::new_err((message, alert)),
            Failure::Generic(m) | Failure::Usage(m) | Failure::Internal(m) => TLSError::new_err(m),
        }
    }
}

pub fn config_err(msg: impl Into<String>) -> PyErr {
    ConfigurationError::new_err(msg.into())
}

/// snake_case name of a TLS alert, as the RFCs spell it.
pub fn alert_name(a: AlertDescription) -> String {
    use AlertDescription as A;
    let s = match a {
        A::CloseNotify => "close_notify",
        A::UnexpectedMessage => "unexpected_message",
        A::BadRecordMac => "bad_record_mac",
        A::DecryptionFailed => "decryption_failed",
        A::RecordOverflow => "record_overflow",
        A::DecompressionFailure => "decompression_failure",
        A::HandshakeFailure => "handshake_failure",
        A::NoCertificate => "no_certificate",
        A::BadCertificate => "bad_certificate",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRevoked => "certificate_revoked",
        A::CertificateExpired => "certificate_expired",
        A::CertificateUnknown => "certificate_unknown",
        A::IllegalParameter => "illegal_parameter",
        A::UnknownCA => "unknown_ca",
        A::AccessDenied => "access_denied",
        A::DecodeError => "decode_error",
        A::DecryptError => "decrypt_error",
        A::ExportRestriction => "export_restriction",
        A::ProtocolVersion => "protocol_version",
        A::InsufficientSecurity => "insufficient_security",
        A::InternalError => "internal_error",
        A::InappropriateFallback => "inappropriate_fallback",
        A::UserCanceled => "user_canceled",
        A::NoRenegotiation => "no_renegotiation",
        A::MissingExtension => "missing_extension",
        A::UnsupportedExtension => "unsupported_extension",
        A::CertificateUnobtainable => "certificate_unobtainable",
        A::UnrecognisedName => "unrecognized_name",
        A::BadCertificateStatusResponse => "bad_certificate_status_response",
        A::BadCertificateHashValue => "bad_certificate_hash_value",
        A::UnknownPSKIdentity => "unknown_psk_identity",
        A::CertificateRequired => "certificate_required",
        A::NoApplicationProtocol => "no_application_protocol",
        A::EncryptedClientHelloRequired => "encrypted_client_hello_required",
        other => return format!("alert {}", u8::from(other)),
    };
    s.to_string()
}

pub(crate) fn is_certificate_alert(a: AlertDescription) -> bool {
    use AlertDescription as A;
    matches!(
        a,
        A::NoCertificate
            | A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::CertificateUnobtainable
            | A::BadCertificateStatusResponse
            | A::BadCertificateHashValue
            | A::CertificateRequired
    )
}

pub(crate) fn certificate_reason(e: &CertificateError) -> String {
    use CertificateError as C;
    match e {
        C::BadEncoding => "certificate is malformed".into(),
        C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate not yet valid".into(),
        C::Revoked => "certificate revoked".into(),
        C::UnhandledCriticalExtension => "certificate has an unhandled critical extension".into(),
        C::UnknownIssuer => "unknown issuer (self-signed or untrusted CA)".into(),
        C::UnknownRevocationStatus => "certificate revocation status unknown".into(),
        C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
            "certificate revocation list expired".into()
        }
        C::BadSignature => "bad certificate signature".into(),
        C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "unsupported certificate signature algorithm".into()
        }
        C::NotValidForName => "certificate not valid for the requested name".into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => {
            if presented.is_empty() {
                format!(
                    "certificate not valid for name '{}' (it names no host)",
                    expected.to_str()
                )
            } else {
                let names: Vec<&str> = presented.iter().map(|p| presented_name(p)).collect();
                format!(
                    "certificate not valid for name '{}' (valid for {})",
                    expected.to_str(),
                    names.join(", ")
                )
            }
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "certificate not allowed for this purpose (extended key usage)".into()
        }
        C::InvalidOcspResponse => "invalid OCSP response".into(),
        C::ApplicationVerificationFailure => "application verification failure".into(),
        #[allow(deprecated)]
        C::UnsupportedSignatureAlgorithm => "unsupported certificate signature algorithm".into(),
        C::Other(o) => match o.0.downcast_ref::<webpki::Error>() {
            Some(w) => webpki_reason(w),
            None => humanize(&o.to_string()),
        },
        other => humanize(&format!("{other:?}")),
    }
}

fn webpki_reason(e: &webpki::Error) -> String {
    use webpki::Error as W;
    match e {
        W::CaUsedAsEndEntity => "a CA certificate was presented as the leaf".into(),
        W::EndEntityUsedAsCa => "a leaf (non-CA) certificate was used as an issuer".into(),
        W::PathLenConstraintViolated => "the chain violates a path length constraint".into(),
        W::NameConstraintViolation => {
            "the certificate violates its issuer's name constraints".into()
        }
        W::MaximumPathDepthExceeded => "the certificate chain is too long".into(),
        W::RequiredEkuNotFoundContext(_) => {
            "certificate not allowed for this purpose (extended key usage)".into()
        }
        other => humanize(&format!("{other:?}")),
    }
}

/// "EndEntityUsedAsCa" -> "end entity used as ca": readable text from a Debug name.
fn humanize(debug: &str) -> String {
    let name: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    if out.is_empty() {
        debug.to_string()
    } else {
        out
    }
}

/// `DnsName("a.example")` -> `a.example` (rustls reports presented names in Debug form).
fn presented_name(p: &str) -> &str {
    p.split_once("(\"")
        .and_then(|(_, rest)| rest.strip_suffix("\")"))
        .unwrap_or(p)
}

fn crl_reason(e: &CertRevocationListError) -> String {
    format!("invalid certificate revocation list: {e:?}")
}

/// Map a fatal rustls error. `handshaking` tells whether the handshake was still running.
/// What to do when the peers share no key exchange group (the OpenSSL engine says the same).
const NO_COMMON_GROUP: &str = "no key exchange group in common with the peer (compare the \
                               groups= option, or the ssl bridge's set_ecdh_curve, on both sides)";

pub fn map_rustls_error(err: &rustls::Error, handshaking: bool) -> Failure {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(ce) => {
            let reason = certificate_reason(ce);
            Failure::Certificate {
                message: format!("certificate verification failed: {reason} ({err})"),
                reason,
                alert: None,
            }
        }
        E::InvalidCertRevocationList(ce) => {
            let reason = crl_reason(ce);
            Failure::Certificate {
                message: format!("certificate verification failed: {reason}"),
                reason,
                alert: None,
            }
        }
        E::NoCertificatesPresented => {
            let reason = "peer sent no certificate but one is required".to_string();
            Failure::Certificate {
                message: format!("certificate verification failed: {reason}"),
                reason,
                alert: None,
            }
        }
        E::PeerIncompatible(rustls::PeerIncompatible::NoKxGroupsInCommon) => {
            Failure::protocol(format!("TLS protocol error: {err}: {NO_COMMON_GROUP}"))
        }
        E::AlertReceived(AlertDescription::CloseNotify) if handshaking => Failure::HandshakeClosed(
            "the peer closed the connection (close_notify) during the TLS handshake".into(),
        ),
        E::AlertReceived(a) if is_certificate_alert(*a) => {
            let name = alert_name(*a);
            let reason = format!("peer rejected our certificate: {name}");
            Failure::Certificate {
                message: format!("the peer rejected our certificate (it sent the alert {name})"),
                reason,
                alert: Some(name),
            }
        }
        E::AlertReceived(a) => {
            let name = alert_name(*a);
            Failure::Protocol {
                message: format!("peer sent fatal alert {name}"),
                alert: Some(name),
            }
        }
        E::InvalidMessage(
            InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion,
        ) => Failure::protocol(format!(
            "TLS protocol error: {err} (is the peer speaking TLS?)"
        )),
        _ => Failure::protocol(format!("TLS protocol error: {err}")),
    }
}
