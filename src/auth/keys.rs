//! A JSON Web Key Set (RFC 7517) read into the keys tokens are verified with. Keys
//! are built by `jsonwebtoken` (`DecodingKey::from_jwk`, aws-lc-rs underneath); this
//! file decides which algorithms each key may verify, so a token's `alg` has to fit
//! the key: an RSA key never serves as an HMAC secret, an `alg` of `none` fits no key.
//!
//! As Envoy does, keys that cannot be used (an unknown `kty`, `use: enc`, a broken
//! modulus) are skipped; a set left without any usable key is an error.

use jsonwebtoken::Algorithm;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use serde::Deserialize as _;

/// One usable key.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    /// The algorithms this key verifies.
    algorithms: &'static [Algorithm],
    key: DecodingKey,
}

impl Key {
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<Key>,
}

/// Why a JWKS document gave no key (Envoy's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeySetError {
    #[error("Jwks is an invalid JSON")]
    Json,
    #[error("Jwks does not have [keys] field")]
    NoKeys,
    #[error("[keys] in Jwks is not an array")]
    BadKeys,
    #[error("Jwks doesn't have any valid public key")]
    NoValidKeys,
}

const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The one-algorithm list of `alg`, for a key that names its algorithm.
fn only(alg: Algorithm) -> &'static [Algorithm] {
    match alg {
        Algorithm::HS256 => &[Algorithm::HS256],
        Algorithm::HS384 => &[Algorithm::HS384],
        Algorithm::HS512 => &[Algorithm::HS512],
        Algorithm::ES256 => &[Algorithm::ES256],
        Algorithm::ES384 => &[Algorithm::ES384],
        Algorithm::RS256 => &[Algorithm::RS256],
        Algorithm::RS384 => &[Algorithm::RS384],
        Algorithm::RS512 => &[Algorithm::RS512],
        Algorithm::PS256 => &[Algorithm::PS256],
        Algorithm::PS384 => &[Algorithm::PS384],
        Algorithm::PS512 => &[Algorithm::PS512],
        Algorithm::EdDSA => &[Algorithm::EdDSA],
        _ => &[],
    }
}

fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The algorithms a key of this type may verify: its own `alg` when it names one
/// (and that fits its type), else every algorithm of its type and curve.
fn algorithms(jwk: &Jwk) -> Option<&'static [Algorithm]> {
    let by_type: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::OctetKey(_) => HMAC,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(alg) => {
            let alg = signing_algorithm(alg)?;
            by_type.contains(&alg).then(|| only(alg))
        }
    }
}

impl KeySet {
    /// Reads a JWKS document (`{"keys": [...]}`).
    pub(crate) fn parse(text: &str) -> Result<KeySet, KeySetError> {
        let doc: serde_json::Value = serde_json::from_str(text).map_err(|_| KeySetError::Json)?;
        let serde_json::Value::Object(doc) = doc else {
            return Err(KeySetError::Json);
        };
        let keys = match doc.get("keys") {
            None => return Err(KeySetError::NoKeys),
            Some(serde_json::Value::Array(keys)) => keys,
            Some(_) => return Err(KeySetError::BadKeys),
        };
        let keys: Vec<Key> = keys.iter().filter_map(usable_key).collect();
        if keys.is_empty() {
            return Err(KeySetError::NoValidKeys);
        }
        Ok(KeySet { keys })
    }

    /// The key ids of the set, for `/config_dump` and `check` (`-` for a key without).
    pub(crate) fn kids(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.kid.clone().unwrap_or_else(|| "-".into()))
            .collect()
    }
}

fn usable_key(value: &serde_json::Value) -> Option<Key> {
    let jwk = Jwk::deserialize(value).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithms = algorithms(&jwk)?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISTIO_SAMPLE: &str = include_str!("testdata/jwks.json");

    #[test]
    fn the_istio_sample_key_set_has_its_rsa_key() {
        let set = KeySet::parse(ISTIO_SAMPLE).unwrap();
        assert_eq!(set.kids(), ["DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ"]);
        assert!(set.keys[0].fits(Algorithm::RS256));
        assert!(set.keys[0].fits(Algorithm::PS512));
        assert!(!set.keys[0].fits(Algorithm::HS256));
        assert!(!set.keys[0].fits(Algorithm::ES256));
    }

    #[test]
    fn broken_documents_say_why_in_envoys_words() {
        assert_eq!(KeySet::parse("{").unwrap_err(), KeySetError::Json);
        assert_eq!(KeySet::parse("[]").unwrap_err(), KeySetError::Json);
        assert_eq!(KeySet::parse("{}").unwrap_err(), KeySetError::NoKeys);
        assert_eq!(
            KeySet::parse(r#"{"keys": {}}"#).unwrap_err(),
            KeySetError::BadKeys
        );
        assert_eq!(
            KeySet::parse(r#"{"keys": [{"kty": "XYZ"}, {"kty": "RSA"}, 3]}"#).unwrap_err(),
            KeySetError::NoValidKeys
        );
        assert_eq!(
            KeySet::parse(r#"{"keys": []}"#).unwrap_err().to_string(),
            "Jwks doesn't have any valid public key"
        );
    }

    #[test]
    fn a_key_with_alg_verifies_only_that_alg_and_unusable_keys_are_skipped() {
        let text = r#"{"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS384", "kid": "h"},
            {"kty": "oct", "k": "c2VjcmV0", "alg": "RS256", "kid": "mismatch"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "e",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        let set = KeySet::parse(text).unwrap();
        assert_eq!(set.kids(), ["h", "e"]);
        assert!(set.keys[0].fits(Algorithm::HS384));
        assert!(!set.keys[0].fits(Algorithm::HS256));
        assert!(set.keys[1].fits(Algorithm::ES256));
        assert!(!set.keys[1].fits(Algorithm::ES384));
    }
}
