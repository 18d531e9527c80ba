//! Choosing the Gateway server for a TLS ClientHello by its SNI name, and checking at
//! load time that a server's certificate covers the hosts it is declared for.
//!
//! A shard reads the ClientHello's name ([`super::read_client_hello`]), asks its port's
//! [`SniSelector`] which server the name belongs to, and continues the handshake with
//! that server's `ServerConfig` (or with [`SniSelector::reject`], which ends it with an
//! alert). The selector is compiled on the control thread: exact names in a hash map,
//! wildcard suffixes in another, so a lookup costs one hash per label of the name.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use rustls::ServerConfig;

use super::cert_info::{self, names_for_message};
use super::server_config::reject_config;
use super::{CertifiedMaterial, TlsError};
use crate::config::model::HostPattern;

/// The label used to check that a certificate covers a `*.suffix` host pattern: a name
/// only a wildcard certificate entry can match.
const WILDCARD_PROBE_LABEL: &str = "ringress-wildcard-probe";

/// Which server of a listener port serves a TLS connection, by SNI.
#[derive(Debug)]
pub struct SniSelector {
    /// Index = server id, as given to [`SniSelector::new`].
    configs: Vec<Arc<ServerConfig>>,
    /// `httpbin.example.com` → server id.
    exact: HashMap<String, usize>,
    /// `*.example.com`, keyed by its suffix with the leading dot: `.example.com`.
    suffixes: HashMap<String, usize>,
    /// The server with host `*`.
    any: Option<usize>,
    reject: Arc<ServerConfig>,
}

impl SniSelector {
    /// Compiles the servers of one port; a server's index in `servers` is its id.
    /// A host pattern declared by two servers is an error.
    pub fn new(servers: Vec<(Vec<HostPattern>, Arc<ServerConfig>)>) -> Result<Self, TlsError> {
        let mut selector = SniSelector {
            configs: Vec::with_capacity(servers.len()),
            exact: HashMap::new(),
            suffixes: HashMap::new(),
            any: None,
            reject: reject_config(),
        };
        for (id, (hosts, config)) in servers.into_iter().enumerate() {
            for host in hosts {
                let duplicate = |first: usize| TlsError::DuplicateHost {
                    host: host.to_string(),
                    first,
                    second: id,
                };
                let slot = match &host {
                    HostPattern::Exact(h) => selector.exact.entry(h.to_ascii_lowercase()),
                    HostPattern::Suffix(s) => selector.suffixes.entry(s.to_ascii_lowercase()),
                    HostPattern::Any => match selector.any {
                        Some(first) if first != id => return Err(duplicate(first)),
                        _ => {
                            selector.any = Some(id);
                            continue;
                        }
                    },
                };
                match slot {
                    Entry::Vacant(v) => {
                        v.insert(id);
                    }
                    Entry::Occupied(o) if *o.get() != id => return Err(duplicate(*o.get())),
                    Entry::Occupied(_) => {}
                }
            }
            selector.configs.push(config);
        }
        Ok(selector)
    }

    /// The server for a ClientHello's SNI name: the exact host first, then the longest
    /// matching `*.suffix`, then `*`. Without SNI only a `*` server matches. Names are
    /// compared case-insensitively; a trailing dot is ignored. `None` means no server
    /// of this port serves the name: finish the handshake with [`Self::reject`].
    pub fn select(&self, server_name: Option<&str>) -> Option<(usize, &Arc<ServerConfig>)> {
        let id = match server_name {
            Some(name) => self.lookup(name).or(self.any),
            None => self.any,
        }?;
        self.configs.get(id).map(|config| (id, config))
    }

    fn lookup(&self, name: &str) -> Option<usize> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.lookup_lower(&name.to_ascii_lowercase())
        } else {
            self.lookup_lower(name)
        }
    }

    fn lookup_lower(&self, name: &str) -> Option<usize> {
        if let Some(&id) = self.exact.get(name) {
            return Some(id);
        }
        if self.suffixes.is_empty() {
            return None;
        }
        // Each dot after the first character starts a candidate suffix; the leftmost
        // dot gives the longest one, so the first hit is the most specific wildcard.
        name.char_indices()
            .filter(|&(i, c)| c == '.' && i > 0)
            .find_map(|(i, _)| name.get(i..).and_then(|s| self.suffixes.get(s)))
            .copied()
    }

    /// The configuration that refuses a handshake with an alert, for a ClientHello
    /// that [`Self::select`] found no server for.
    pub(crate) fn reject(&self) -> &Arc<ServerConfig> {
        &self.reject
    }

    /// The number of servers (ids are `0..len()`).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.configs.len()
    }
}

/// Whether the leaf certificate of `material` is valid for `host`, as a client that
/// falls back to the subject CN decides (curl, OpenSSL): by its DNS and IP
/// subjectAltNames, or its subject CN when it has neither
/// ([`cert_info::server_names`]). A `*.suffix` pattern is covered by a matching
/// wildcard entry; `*` always passes.
pub fn check_covers(material: &CertifiedMaterial, host: &HostPattern) -> Result<(), TlsError> {
    let Some(leaf) = material.leaf() else {
        return Err(TlsError::BadCertificate {
            what: format!("the certificate chain from {}", material.source),
            detail: "the chain is empty".to_owned(),
        });
    };
    let name = match host {
        HostPattern::Any => return Ok(()),
        HostPattern::Exact(h) => h.to_ascii_lowercase(),
        HostPattern::Suffix(s) => format!("{WILDCARD_PROBE_LABEL}{}", s.to_ascii_lowercase()),
    };
    let names = cert_info::server_names(leaf).map_err(|detail| TlsError::BadCertificate {
        what: format!("the certificate from {}", material.source),
        detail,
    })?;
    if names.iter().any(|pattern| name_matches(pattern, &name)) {
        return Ok(());
    }
    Err(TlsError::NotCovered {
        source_name: material.source.clone(),
        host: host.to_string(),
        sans: names_for_message(leaf),
    })
}

/// Whether a certificate name (lower-case; `*.` wildcard as the whole leftmost label
/// only, RFC 6125 6.4.3) matches the lower-case host `name`.
fn name_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.strip_suffix('.').unwrap_or(pattern);
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && !suffix.is_empty() && rest == suffix),
        None => pattern == name,
    }
}
