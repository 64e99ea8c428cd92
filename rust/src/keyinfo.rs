//! What kind of private key a DER blob holds, read from its ASN.1 (no crypto library needed), so
//! that an engine refusing a key can say why ("RSA-1024 is too small") instead of "malformed".

/// The key types and parameters that decide whether an engine can use a key for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    Ec { curve: &'static str },
    Ed25519,
    Ed448,
    Dsa,
    Other(String),
}

impl KeyKind {
    pub fn describe(&self) -> String {
        match self {
            KeyKind::Rsa { bits } => format!("RSA-{bits}"),
            KeyKind::Ec { curve } => format!("ECDSA on {curve}"),
            KeyKind::Ed25519 => "Ed25519".into(),
            KeyKind::Ed448 => "Ed448".into(),
            KeyKind::Dsa => "DSA".into(),
            KeyKind::Other(oid) => format!("a key of algorithm {oid}"),
        }
    }
}

/// One DER TLV: (tag, contents, rest).
pub(crate) fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first & 0x80 == 0 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7F) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn oid_string(der: &[u8]) -> String {
    let mut parts: Vec<u64> = Vec::new();
    let mut value = 0u64;
    for b in der {
        value = (value << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = value.min(80) / 40;
                parts.push(first.min(2));
                parts.push(value - 40 * first.min(2));
            } else {
                parts.push(value);
            }
            value = 0;
        }
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn curve_name(oid: &str) -> &'static str {
    match oid {
        "1.2.840.10045.3.1.7" => "P-256",
        "1.3.132.0.34" => "P-384",
        "1.3.132.0.35" => "P-521",
        "1.3.132.0.10" => "secp256k1",
        o if o.starts_with("1.3.36.3.3.2.8.1.1.") => "a brainpool curve",
        _ => "an unknown curve",
    }
}

/// Bit length of a DER INTEGER's contents (a modulus).
fn integer_bits(contents: &[u8]) -> usize {
    let trimmed: &[u8] = {
        let start = contents
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(contents.len());
        &contents[start..]
    };
    match trimmed.first() {
        None => 0,
        Some(top) => (trimmed.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// RSAPrivateKey (PKCS#1): SEQUENCE { version, modulus, ... }.
fn rsa_bits(pkcs1: &[u8]) -> Option<usize> {
    let (0x30, body, _) = tlv(pkcs1)? else {
        return None;
    };
    let (0x02, _version, rest) = tlv(body)? else {
        return None;
    };
    let (0x02, modulus, _) = tlv(rest)? else {
        return None;
    };
    Some(integer_bits(modulus))
}

/// The kind of a PKCS#8, SEC1 (EC) or PKCS#1 (RSA) private key, if the DER says.
pub fn key_kind(der: &[u8]) -> Option<KeyKind> {
    let (0x30, body, _) = tlv(der)? else {
        return None;
    };
    let (0x02, _version, rest) = tlv(body)? else {
        return None;
    };
    match tlv(rest)? {
        // PKCS#8: AlgorithmIdentifier, then the key in an OCTET STRING.
        (0x30, algorithm, rest) => {
            let (0x06, oid, params) = tlv(algorithm)? else {
                return None;
            };
            let oid = oid_string(oid);
            Some(match oid.as_str() {
                "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => {
                    let (0x04, inner, _) = tlv(rest)? else {
                        return None;
                    };
                    KeyKind::Rsa {
                        bits: rsa_bits(inner)?,
                    }
                }
                "1.2.840.10045.2.1" => {
                    let curve = match tlv(params) {
                        Some((0x06, c, _)) => curve_name(&oid_string(c)),
                        _ => "an unknown curve",
                    };
                    KeyKind::Ec { curve }
                }
                "1.3.101.112" => KeyKind::Ed25519,
                "1.3.101.113" => KeyKind::Ed448,
                "1.2.840.10040.4.1" => KeyKind::Dsa,
                _ => KeyKind::Other(oid),
            })
        }
        // PKCS#1 RSAPrivateKey: the modulus follows the version.
        (0x02, modulus, _) => Some(KeyKind::Rsa {
            bits: integer_bits(modulus),
        }),
        // SEC1 ECPrivateKey: the private key OCTET STRING, then [0] parameters.
        (0x04, _key, rest) => {
            let mut rest = rest;
            while let Some((tag, contents, next)) = tlv(rest) {
                if tag == 0xA0 {
                    if let Some((0x06, c, _)) = tlv(contents) {
                        return Some(KeyKind::Ec {
                            curve: curve_name(&oid_string(c)),
                        });
                    }
                }
                rest = next;
            }
            Some(KeyKind::Ec {
                curve: "an unknown curve",
            })
        }
        _ => None,
    }
}

/// What a certificate's names are, as raw DER: the value of its subjectAltName extension, or
/// its subject name when it has none. Two leaves with equal values are valid for the same names
/// (a server's RSA and ECDSA certificates for one site).
pub fn names_der(cert: &[u8]) -> Option<Vec<u8>> {
    let (_, certificate, _) = tlv(cert)?;
    let (_, tbs, _) = tlv(certificate)?;
    let mut rest = tbs;
    if let Some((0xA0, _, after)) = tlv(rest) {
        rest = after; // [0] version
    }
    // serialNumber, signature, issuer, validity
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (_, subject, after) = tlv(rest)?;
    rest = tlv(after)?.2; // subjectPublicKeyInfo
    while let Some((tag, contents, after)) = tlv(rest) {
        rest = after;
        if tag != 0xA3 {
            continue; // issuerUniqueID, subjectUniqueID
        }
        let (_, mut extensions, _) = tlv(contents)?;
        while let Some((_, extension, after)) = tlv(extensions) {
            extensions = after;
            let (_, oid, value) = tlv(extension)?;
            if oid == [0x55, 0x1D, 0x11] {
                // id-ce-subjectAltName: [critical BOOLEAN] OCTET STRING
                let (tag, contents, after) = tlv(value)?;
                let octets = if tag == 0x01 { tlv(after)?.1 } else { contents };
                return Some(octets.to_vec());
            }
        }
    }
    Some(subject.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids() {
        assert_eq!(
            oid_string(&[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]),
            "1.2.840.10045.2.1"
        );
        assert_eq!(oid_string(&[0x2B, 0x65, 0x70]), "1.3.101.112");
    }

    #[test]
    fn bits() {
        assert_eq!(integer_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(integer_bits(&[0x01]), 1);
    }
}

/// Why a key an engine refused cannot be used, when its DER tells (`engine`: for the message).
pub fn why_unusable(der: &[u8], engine: &str, curves: &[&str]) -> Option<String> {
    let kind = key_kind(der)?;
    let what = kind.describe();
    Some(match kind {
        KeyKind::Rsa { bits } if bits < 2048 => format!(
            "{what} is too small: {engine} takes RSA keys of 2048 bits or more; make a new key \
             (RSA-2048 or larger, or ECDSA P-256)"
        ),
        KeyKind::Rsa { .. } => return None,
        KeyKind::Ec { curve } if !curves.contains(&curve) => format!(
            "{what} cannot sign TLS handshakes with {engine}: use ECDSA on {}",
            curves.join(" or ")
        ),
        KeyKind::Ec { .. } | KeyKind::Ed25519 => return None,
        KeyKind::Dsa => format!(
            "{what} keys cannot sign TLS 1.2/1.3 handshakes: use an ECDSA, Ed25519 or RSA key"
        ),
        KeyKind::Ed448 | KeyKind::Other(_) => {
            format!("{what} is not supported by {engine}: use an ECDSA, Ed25519 or RSA key")
        }
    })
}

/// A readable message for a PEM parsing failure.
pub fn pem_problem(err: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match err {
        E::MissingSectionEnd { end_marker } => format!(
            "the PEM data has no END line ('-----END {}-----'): is it truncated?",
            String::from_utf8_lossy(end_marker)
        ),
        E::IllegalSectionStart { .. } => "the PEM data has a malformed BEGIN line".into(),
        E::Base64Decode(e) => format!("the PEM data is not valid base64 ({e})"),
        other => format!("malformed PEM: {other}"),
    }
}
