//! Session-ticket keys, one set per client-trust setting.
//!
//! A resumed TLS session skips certificate verification, so a ticket issued by a
//! server that did not ask for a client certificate (SIMPLE) must never resume on one
//! that requires it (MUTUAL), nor a ticket verified against one CA on a server trusting
//! another. rustls already refuses resumption under a different server name; this
//! covers the same name on another port, and a reload that changes a server's trust.
//! Servers with the same trust share one ticketer — so a client resumes on any shard
//! and across reloads — and a server whose trust changed gets new keys, which makes
//! every older ticket fail to decrypt and fall back to a full handshake.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::ProducesTickets;

use super::credential::{CertifiedMaterial, load_certificates, load_crls};
use super::{TlsError, new_ticketer};
use crate::config::{ServerTls, TlsMode};

/// SHA-256 over everything that decides which client certificates a server accepts.
type TrustFingerprint = [u8; 32];

/// The ticketers in use, by trust. Owned by the control thread; each snapshot build
/// takes the ones it needs and drops those no server uses any more.
#[derive(Default)]
pub(crate) struct Ticketers {
    in_use: HashMap<TrustFingerprint, Arc<dyn ProducesTickets>>,
    building: HashMap<TrustFingerprint, Arc<dyn ProducesTickets>>,
}

impl Ticketers {
    pub(crate) fn new() -> Ticketers {
        Ticketers::default()
    }

    /// The ticketer for a server with these TLS settings (created on first use).
    pub(crate) fn for_server(
        &mut self,
        tls: &ServerTls,
        material: &CertifiedMaterial,
    ) -> Result<Arc<dyn ProducesTickets>, TlsError> {
        let key = trust_fingerprint(tls, material)?;
        if let Some(ticketer) = self.building.get(&key) {
            return Ok(ticketer.clone());
        }
        let ticketer = match self.in_use.get(&key) {
            Some(ticketer) => ticketer.clone(),
            None => new_ticketer()?,
        };
        self.building.insert(key, ticketer.clone());
        Ok(ticketer)
    }

    /// Ends a snapshot build: the ticketers it asked for become the ones in use when
    /// it `succeeded`; otherwise the build's requests are forgotten.
    pub(crate) fn finish_build(&mut self, succeeded: bool) {
        let built = std::mem::take(&mut self.building);
        if succeeded {
            self.in_use = built;
        }
    }

    /// How many distinct ticket keys are in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_use.len()
    }
}

fn trust_fingerprint(
    tls: &ServerTls,
    material: &CertifiedMaterial,
) -> Result<TrustFingerprint, TlsError> {
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mode: &[u8] = match tls.mode {
        TlsMode::Simple => b"SIMPLE",
        TlsMode::Mutual => b"MUTUAL",
        TlsMode::OptionalMutual => b"OPTIONAL_MUTUAL",
    };
    hash.update(mode);
    if tls.mode != TlsMode::Simple {
        let cas = match &tls.ca_certificates {
            Some(path) => load_certificates(path)?,
            None => material.ca.clone().unwrap_or_default(),
        };
        for ca in &cas {
            hash.update(&(ca.len() as u64).to_be_bytes());
            hash.update(ca);
        }
        if let Some(path) = &tls.ca_crl {
            for crl in load_crls(path)? {
                hash.update(b"\0crl\0");
                hash.update(&crl);
            }
        }
        for name in &tls.subject_alt_names {
            hash.update(b"\0san\0");
            hash.update(name.as_bytes());
        }
    }
    let mut fingerprint = [0; 32];
    fingerprint.copy_from_slice(hash.finish().as_ref());
    Ok(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credential;
    use crate::demo::pki;

    fn settings(mode: TlsMode, ca: Option<std::path::PathBuf>) -> ServerTls {
        ServerTls {
            mode,
            credential: Credential::Named("unused".into()),
            ca_certificates: ca,
            ca_crl: None,
            min_protocol_version: None,
            max_protocol_version: None,
            cipher_suites: Vec::new(),
            subject_alt_names: Vec::new(),
        }
    }

    #[test]
    fn trust_decides_which_servers_share_ticket_keys() {
        let dir = std::env::temp_dir().join(format!("ringress-tickets-{}", std::process::id()));
        let pki = pki::generate(&dir, &["a.example.com"]).expect("pki");
        let material = crate::tls::load_credential(
            &Credential::Files {
                cert: pki.cert("a.example.com"),
                key: pki.key("a.example.com"),
            },
            None,
        )
        .expect("material");
        let simple = settings(TlsMode::Simple, None);
        let mutual = settings(TlsMode::Mutual, Some(pki.root_cert.clone()));
        let other_ca = settings(TlsMode::Mutual, Some(pki.other_ca_cert.clone()));

        let mut ticketers = Ticketers::new();
        let s1 = ticketers.for_server(&simple, &material).expect("simple");
        let s2 = ticketers
            .for_server(&simple, &material)
            .expect("simple again");
        let m = ticketers.for_server(&mutual, &material).expect("mutual");
        let o = ticketers
            .for_server(&other_ca, &material)
            .expect("other CA");
        assert!(Arc::ptr_eq(&s1, &s2), "SIMPLE servers share keys");
        assert!(!Arc::ptr_eq(&s1, &m), "SIMPLE and MUTUAL never share");
        assert!(
            !Arc::ptr_eq(&m, &o),
            "MUTUAL servers trusting other CAs never share"
        );
        ticketers.finish_build(true);
        assert_eq!(ticketers.len(), 3);

        // A reload with the same trust keeps the keys: sessions resume across it.
        let again = ticketers.for_server(&mutual, &material).expect("reload");
        assert!(Arc::ptr_eq(&again, &m));
        ticketers.finish_build(true);
        assert_eq!(ticketers.len(), 1, "unused keys are dropped");

        // A failed build changes nothing.
        let _ = ticketers
            .for_server(&simple, &material)
            .expect("failed build");
        ticketers.finish_build(false);
        assert_eq!(ticketers.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
