//! API keys: minting, format and fingerprints.
//!
//! A key is `payi_` followed by the base58 encoding of 32 random bytes from the
//! operating system's CSPRNG and their 4-byte CRC-32. The fixed prefix and the
//! checksum let secret scanners recognise a leaked key with few false positives;
//! 256 bits of entropy make guessing hopeless.

use std::fmt;

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// Prefix of every key this operator mints.
pub const PREFIX: &str = "payi_";
const ENTROPY_BYTES: usize = 32;
const CHECKSUM_BYTES: usize = 4;
/// Hex digits of the SHA-256 kept in a fingerprint: 64 bits, enough to tell keys apart.
const FINGERPRINT_HEX_DIGITS: usize = 16;

/// A minted key. Debug output is redacted so a key cannot reach logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct MintError(String);

impl ApiKey {
    /// Mints a fresh key from the operating system's CSPRNG.
    pub fn mint() -> Result<Self, MintError> {
        let mut entropy = [0u8; ENTROPY_BYTES];
        OsRng.try_fill_bytes(&mut entropy).map_err(|e| MintError(e.to_string()))?;
        Ok(Self::from_entropy(&entropy))
    }

    fn from_entropy(entropy: &[u8; ENTROPY_BYTES]) -> Self {
        let mut body = Vec::with_capacity(ENTROPY_BYTES + CHECKSUM_BYTES);
        body.extend_from_slice(entropy);
        body.extend_from_slice(&crc32fast::hash(entropy).to_be_bytes());
        Self(format!("{PREFIX}{}", bs58::encode(body).into_string()))
    }

    /// A key built from fixed bytes, so tests elsewhere can predict it.
    #[cfg(test)]
    pub fn for_tests(entropy: &[u8; ENTROPY_BYTES]) -> Self {
        Self::from_entropy(entropy)
    }

    /// The key itself, for writing into the Secret and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.fingerprint())
    }
}

/// `sha256:<first 16 hex digits>` of any key material, safe to show in status.
pub fn fingerprint(key: &str) -> String {
    let full = digest(key);
    full[..DIGEST_PREFIX.len() + FINGERPRINT_HEX_DIGITS].to_string()
}

/// Prefix of a [`digest`] and a [`fingerprint`].
pub const DIGEST_PREFIX: &str = "sha256:";

/// `sha256:<64 lowercase hex digits>` of a key: what gateways compare a presented key
/// with. Publishing it reveals nothing usable, since the key has 256 random bits.
pub fn digest(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(DIGEST_PREFIX.len() + 64);
    out.push_str(DIGEST_PREFIX);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether a string has the shape and checksum of a key this operator mints.
pub fn is_well_formed(key: &str) -> bool {
    let Some(encoded) = key.strip_prefix(PREFIX) else {
        return false;
    };
    let Ok(body) = bs58::decode(encoded).into_vec() else {
        return false;
    };
    if body.len() != ENTROPY_BYTES + CHECKSUM_BYTES {
        return false;
    }
    let (entropy, checksum) = body.split_at(ENTROPY_BYTES);
    crc32fast::hash(entropy).to_be_bytes() == checksum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_well_formed_and_distinct() {
        let a = ApiKey::mint().unwrap();
        let b = ApiKey::mint().unwrap();
        assert!(a.expose().starts_with(PREFIX));
        assert!(is_well_formed(a.expose()));
        assert_ne!(a, b);
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn a_corrupted_key_fails_the_checksum() {
        let key = ApiKey::from_entropy(&[7u8; ENTROPY_BYTES]);
        let mut chars: Vec<char> = key.expose().chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == '2' { '3' } else { '2' };
        let corrupted: String = chars.into_iter().collect();
        assert!(is_well_formed(key.expose()));
        assert!(!is_well_formed(&corrupted));
        assert!(!is_well_formed("payi_"));
        assert!(!is_well_formed("sk_live_abc"));
        assert!(!is_well_formed("payi_0OIl"));
    }

    #[test]
    fn debug_output_never_contains_the_key() {
        let key = ApiKey::mint().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(key.expose()));
        assert!(shown.contains(&key.fingerprint()));
    }

    #[test]
    fn fingerprint_is_a_stable_sha256_prefix() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(fingerprint("abc"), "sha256:ba7816bf8f01cfea");
        assert_eq!(fingerprint("abc").len(), "sha256:".len() + FINGERPRINT_HEX_DIGITS);
    }

    #[test]
    fn digest_is_the_full_sha256_and_starts_with_the_fingerprint() {
        assert_eq!(digest("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let key = ApiKey::mint().unwrap();
        assert!(digest(key.expose()).starts_with(&key.fingerprint()));
    }
}
