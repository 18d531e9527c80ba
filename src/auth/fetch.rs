//! Remote key sets, fetched by the control thread (never a shard) over HTTPS with
//! rustls, trusting the system's CA store — or `SSL_CERT_FILE` / `SSL_CERT_DIR` when
//! set, as curl and openssl do — with each rule's `timeout`. A source without a
//! `jwksUri` is found through the issuer's OpenID discovery document. A refresh that
//! fails keeps the last good keys; a source whose keys never loaded has none, and its
//! tokens fail (`Jwks remote fetch is failed`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{KeyRing, KeySet, SourceKeys};
use crate::config::{Config, JwksSource};

/// How often remote key sets are fetched again by default (Istio's
/// `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(20 * 60);

/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: u64 = 1 << 20;

/// One remote source of `config` and the longest any of its rules lets a fetch take.
fn sources(config: &Config) -> BTreeMap<String, (bool, Duration)> {
    let mut out: BTreeMap<String, (bool, Duration)> = BTreeMap::new();
    for rule in config.jwt_providers() {
        let (url, discovery) = match &rule.keys {
            JwksSource::Uri(u) => (u, false),
            JwksSource::Discovery(u) => (u, true),
            JwksSource::Inline(_) => continue,
        };
        let entry = out.entry(url.clone()).or_insert((discovery, rule.timeout));
        entry.1 = entry.1.max(rule.timeout);
    }
    out
}

/// The remote key sources `config` names, in order.
pub(crate) fn source_urls(config: &Config) -> Vec<String> {
    sources(config).into_keys().collect()
}

/// The key ring for `config`: each remote source fetched (or, with `only_new`, only
/// those `old` has no keys for), the others as in `old`. Fetches run one after the
/// other on the calling (control) thread, each bounded by its timeout.
pub(crate) fn refresh(config: &Config, old: &KeyRing, only_new: bool) -> KeyRing {
    let mut ring = KeyRing::default();
    for (url, (discovery, timeout)) in sources(config) {
        let previous = old.sources.get(&url).cloned().unwrap_or_default();
        if only_new && previous.keys.is_some() {
            ring.sources.insert(url, previous);
            continue;
        }
        let now = SystemTime::now();
        let mut state = SourceKeys {
            last_attempt: Some(now),
            ..previous
        };
        match fetch_keys(&url, discovery, timeout) {
            Ok((jwks_uri, keys)) => {
                tracing::info!(source = %url, jwks_uri = %jwks_uri, kids = ?keys.kids(), "JWKS fetched");
                state.keys = Some(Arc::new(keys));
                state.jwks_uri = Some(jwks_uri);
                state.last_success = Some(now);
                state.last_error = None;
            }
            Err(error) => {
                match state.keys.is_some() {
                    true => {
                        tracing::warn!(source = %url, %error, "JWKS refresh failed; keeping the keys fetched before")
                    }
                    false => {
                        tracing::error!(source = %url, %error, "JWKS fetch failed; tokens of this issuer fail until it succeeds (Jwks remote fetch is failed)")
                    }
                }
                state.last_error = Some(error);
            }
        }
        ring.sources.insert(url, state);
    }
    ring
}

/// Fetches one source: the key set (through the discovery document first when
/// `discovery`), and the JWKS URL it came from.
fn fetch_keys(url: &str, discovery: bool, timeout: Duration) -> Result<(String, KeySet), String> {
    let agent = agent(timeout)?;
    let jwks_uri = match discovery {
        false => url.to_owned(),
        true => {
            let text = get(&agent, url)?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("the OpenID discovery document {url} is not JSON: {e}"))?;
            match doc.get("jwks_uri").and_then(|u| u.as_str()) {
                Some(u) => u.to_owned(),
                None => {
                    return Err(format!(
                        "the OpenID discovery document {url} has no jwks_uri"
                    ));
                }
            }
        }
    };
    let text = get(&agent, &jwks_uri)?;
    let keys = KeySet::parse(&text).map_err(|e| format!("{jwks_uri}: {e}"))?;
    Ok((jwks_uri, keys))
}

fn get(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let response = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut text = String::new();
    response
        .into_body()
        .into_reader()
        .take(MAX_DOCUMENT + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    if text.len() as u64 > MAX_DOCUMENT {
        return Err(format!(
            "GET {url}: the document is larger than {MAX_DOCUMENT} bytes"
        ));
    }
    Ok(text)
}

/// An HTTPS client with the system's (or `SSL_CERT_FILE`'s) trust and `timeout` for
/// the whole exchange.
fn agent(timeout: Duration) -> Result<ureq::Agent, String> {
    let roots: Vec<ureq::tls::Certificate<'static>> = crate::tls::credential::native_roots()?
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(crypto)
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .http_status_as_error(true)
        .max_redirects(3)
        .user_agent("ringress")
        .build()
        .new_agent())
}
