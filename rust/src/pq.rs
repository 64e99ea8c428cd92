//! X25519MLKEM768, the hybrid post-quantum key exchange of draft-ietf-tls-ecdhe-mlkem (IANA
//! group 0x11EC), for rustls on the ring provider.
//!
//! rustls ships this group only in its aws-lc-rs provider, and aws-lc is OpenSSL-derived code
//! that this engine must not contain. So ML-KEM-768 (FIPS 203) comes from Cryspen's
//! `libcrux-ml-kem`, X25519 from ring (rustls' own ring key exchange, `ring::agreement`) and the
//! randomness from ring's system generator. libcrux is pure Rust and formally verified (panic
//! freedom, correctness against the spec, secret-independent code); its portable code is used
//! (its AVX2 code was no faster in a micro-benchmark here). RustCrypto's `ml-kem` 0.3.4, tried first, made a
//! full rustls handshake cost twice the CPU: its keygen, encapsulation and decapsulation took
//! ~5x as long. The wire format follows the draft:
//!
//! - client share: ML-KEM-768 encapsulation key (1184 bytes) || X25519 public key (32)
//! - server share: ML-KEM-768 ciphertext (1088 bytes) || X25519 public key (32)
//! - shared secret: ML-KEM shared secret (32 bytes) || X25519 shared secret (32)
//!
//! A client offering the hybrid also offers a plain x25519 share made from the same X25519 key
//! (`hybrid_component`), so a server without ML-KEM picks x25519 without a HelloRetryRequest
//! and the client does not generate a second X25519 key. The group is TLS 1.3 only.

use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::crypto::ring::kx_group::X25519;
use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::ffdhe_groups::FfdheGroup;
use rustls::{Error, NamedGroup, PeerMisbehaved, ProtocolVersion};
use zeroize::Zeroize;

/// The X25519MLKEM768 key exchange group.
pub static X25519MLKEM768: &dyn SupportedKxGroup = &X25519MlKem768;

const MLKEM768_ENCAPSULATION_KEY_LEN: usize = 1184;
const MLKEM768_CIPHERTEXT_LEN: usize = 1088;
const X25519_LEN: usize = 32;

const INVALID_KEY_SHARE: Error = Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare);

fn random_bytes(out: &mut [u8]) -> Result<(), Error> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| Error::FailedToGetRandomBytes)
}

/// `pq || classical`, the order of X25519MLKEM768's shares and secret.
fn concat(pq: &[u8], classical: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pq.len() + classical.len());
    out.extend_from_slice(pq);
    out.extend_from_slice(classical);
    out
}

/// An ML-KEM-768 decapsulation key, wiped when dropped.
struct DecapsulationKey(MlKem768PrivateKey);

impl Drop for DecapsulationKey {
    fn drop(&mut self) {
        self.0[..MlKem768PrivateKey::len()].zeroize();
    }
}

/// A fresh ML-KEM-768 key pair from 64 random bytes (FIPS 203 ML-KEM.KeyGen's d || z).
fn mlkem_keygen() -> Result<(DecapsulationKey, MlKem768PublicKey), Error> {
    let mut seed = [0u8; 64];
    random_bytes(&mut seed)?;
    let (dk, ek) = mlkem768::generate_key_pair(seed).into_parts();
    seed.zeroize();
    Ok((DecapsulationKey(dk), ek))
}

/// Server side: encapsulate to the client's encapsulation key; (ciphertext, shared secret).
/// The key is checked as FIPS 203 requires (every coefficient reduced), else the share is
/// invalid.
fn mlkem_encapsulate(encapsulation_key: &[u8]) -> Result<(MlKem768Ciphertext, [u8; 32]), Error> {
    let ek = MlKem768PublicKey::try_from(encapsulation_key).map_err(|_| INVALID_KEY_SHARE)?;
    if !mlkem768::validate_public_key(&ek) {
        return Err(INVALID_KEY_SHARE);
    }
    let mut m = [0u8; 32];
    random_bytes(&mut m)?;
    let result = mlkem768::encapsulate(&ek, m);
    m.zeroize();
    Ok(result)
}

#[derive(Debug)]
struct X25519MlKem768;

impl SupportedKxGroup for X25519MlKem768 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let x25519 = X25519.start()?;
        let (mlkem, encapsulation_key) = mlkem_keygen()?;
        let share = concat(encapsulation_key.as_slice(), x25519.pub_key());
        Ok(Box::new(ActiveX25519MlKem768 {
            mlkem,
            x25519,
            share,
        }))
    }

    /// Server side: a KEM cannot start before it has the client's share, so the server's share
    /// (the ciphertext) is made here from it.
    fn start_and_complete(&self, client_share: &[u8]) -> Result<CompletedKeyExchange, Error> {
        if client_share.len() != MLKEM768_ENCAPSULATION_KEY_LEN + X25519_LEN {
            return Err(INVALID_KEY_SHARE);
        }
        let (encapsulation_key, x25519_share) =
            client_share.split_at(MLKEM768_ENCAPSULATION_KEY_LEN);
        let (ciphertext, mut mlkem_secret) = mlkem_encapsulate(encapsulation_key)?;
        let x25519 = X25519.start_and_complete(x25519_share)?;
        let secret = SharedSecret::from(concat(&mlkem_secret, x25519.secret.secret_bytes()));
        mlkem_secret.zeroize();
        Ok(CompletedKeyExchange {
            group: NamedGroup::X25519MLKEM768,
            pub_key: concat(ciphertext.as_slice(), &x25519.pub_key),
            secret,
        })
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        None
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

/// Client side, between ClientHello and ServerHello.
struct ActiveX25519MlKem768 {
    mlkem: DecapsulationKey,
    x25519: Box<dyn ActiveKeyExchange>,
    share: Vec<u8>,
}

impl ActiveKeyExchange for ActiveX25519MlKem768 {
    fn complete(self: Box<Self>, server_share: &[u8]) -> Result<SharedSecret, Error> {
        if server_share.len() != MLKEM768_CIPHERTEXT_LEN + X25519_LEN {
            return Err(INVALID_KEY_SHARE);
        }
        let (ciphertext, x25519_share) = server_share.split_at(MLKEM768_CIPHERTEXT_LEN);
        let ciphertext = MlKem768Ciphertext::try_from(ciphertext).map_err(|_| INVALID_KEY_SHARE)?;
        // Decapsulation never fails: a forged ciphertext yields a pseudorandom secret (implicit
        // rejection), and the handshake then fails at the Finished check.
        let mut mlkem_secret = mlkem768::decapsulate(&self.mlkem.0, &ciphertext);
        let x25519 = self.x25519.complete(x25519_share)?;
        let secret = SharedSecret::from(concat(&mlkem_secret, x25519.secret_bytes()));
        mlkem_secret.zeroize();
        Ok(secret)
    }

    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        Some((NamedGroup::X25519, self.x25519.pub_key()))
    }

    fn complete_hybrid_component(
        self: Box<Self>,
        server_share: &[u8],
    ) -> Result<SharedSecret, Error> {
        self.x25519.complete(server_share)
    }

    fn pub_key(&self) -> &[u8] {
        &self.share
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        None
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }
}
