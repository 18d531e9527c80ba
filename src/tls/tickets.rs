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
//!
//! The keys are random (rustls' own `Ticketer`, rotated every 6 hours, one process's
//! alone) unless `--session-ticket-keys` names a file: then each trust setting's
//! ticketer derives its keys from the file's ([`FileTicketer`]), so every replica
//! given the same file opens the others' tickets. The file is read again at every
//! reload; while it holds the same keys the ticketers stay the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::ProducesTickets;

use super::credential::{CertifiedMaterial, load_certificates, load_crls};
use super::ticket_keys::{FileTicketer, TicketKeyError, TicketKeys};
use super::{TlsError, new_ticketer};
use crate::config::{ServerTls, TlsMode};

/// SHA-256 over everything that decides which client certificates a server accepts.
type TrustFingerprint = [u8; 32];

/// The ticketers in use, by trust. Owned by the control thread; each snapshot build
/// takes the ones it needs and drops those no server uses any more.
#[derive(Default)]
pub(crate) struct Ticketers {
    /// `--session-ticket-keys`, when set.
    key_file: Option<PathBuf>,
    /// The file's keys the ticketers in use derive from; `None`: random keys.
    keys: Option<Arc<TicketKeys>>,
    in_use: HashMap<TrustFingerprint, Arc<dyn ProducesTickets>>,
    /// Keys read for the next build because they differ from `keys`: the build derives
    /// every ticketer afresh from them, and they replace `keys` if it succeeds.
    staged: Option<Arc<TicketKeys>>,
    building: HashMap<TrustFingerprint, Arc<dyn ProducesTickets>>,
}

impl Ticketers {
    /// Ticketers with random keys.
    pub(crate) fn new() -> Ticketers {
        Ticketers::default()
    }

    /// Ticketers with keys from `key_file` (read now), or random ones without a file.
    pub(crate) fn load(key_file: Option<&Path>) -> Result<Ticketers, TicketKeyError> {
        let Some(path) = key_file else {
            return Ok(Ticketers::new());
        };
        let keys = TicketKeys::load(path)?;
        tracing::info!(
            file = %path.display(),
            keys = keys.len(),
            sealing = %keys.sealing_key_id(),
            "session ticket keys read"
        );
        Ok(Ticketers {
            key_file: Some(path.to_path_buf()),
            keys: Some(Arc::new(keys)),
            ..Ticketers::default()
        })
    }

    /// Reads the key file again before a reload's build; a file that fails to read
    /// fails the reload (the keys in use keep serving). Without a file, nothing.
    pub(crate) fn reread_key_file(&mut self) -> Result<(), TicketKeyError> {
        let Some(path) = &self.key_file else {
            return Ok(());
        };
        let keys = TicketKeys::load(path)?;
        self.staged = (self.keys.as_deref() != Some(&keys)).then(|| Arc::new(keys));
        Ok(())
    }

    /// The key file's keys in use, when there is a file.
    pub(crate) fn file_keys(&self) -> Option<&TicketKeys> {
        self.keys.as_deref()
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
        // New keys from the file make every ticketer anew; otherwise one in use stays.
        let ticketer = match (&self.staged, self.in_use.get(&key)) {
            (None, Some(ticketer)) => ticketer.clone(),
            (staged, _) => match staged.as_ref().or(self.keys.as_ref()) {
                Some(keys) => Arc::new(FileTicketer::new(keys, &key)?),
                None => new_ticketer()?,
            },
        };
        self.building.insert(key, ticketer.clone());
        Ok(ticketer)
    }

    /// Ends a snapshot build: the ticketers it asked for (and the keys it read) become
    /// the ones in use when it `succeeded`; otherwise the build's requests are
    /// forgotten.
    pub(crate) fn finish_build(&mut self, succeeded: bool) {
        let built = std::mem::take(&mut self.building);
        let staged = self.staged.take();
        if succeeded {
            self.in_use = built;
            if let Some(keys) = staged {
                tracing::info!(
                    file = %keys.path().display(),
                    keys = keys.len(),
                    sealing = %keys.sealing_key_id(),
                    "session ticket keys changed"
                );
                self.keys = Some(keys);
            }
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
    fn ticketers_from_a_key_file_change_only_with_the_file() {
        let dir = std::env::temp_dir().join(format!("ringress-keyfile-{}", std::process::id()));
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
        let file = dir.join("ticket-keys");
        let first = crate::tls::generate_key_line().unwrap();
        std::fs::write(&file, format!("{first}\n")).unwrap();

        let mut ticketers = Ticketers::load(Some(&file)).expect("keys");
        let s = ticketers.for_server(&simple, &material).expect("simple");
        let m = ticketers.for_server(&mutual, &material).expect("mutual");
        ticketers.finish_build(true);
        let ticket = s.encrypt(b"session").expect("sealed");
        assert_eq!(m.decrypt(&ticket), None, "SIMPLE and MUTUAL never share");

        // Another process reading the same file opens the ticket.
        let mut replica = Ticketers::load(Some(&file)).expect("keys");
        let r = replica.for_server(&simple, &material).expect("simple");
        assert_eq!(r.decrypt(&ticket).as_deref(), Some(&b"session"[..]));

        // The same keys (a comment added): the same ticketers.
        std::fs::write(&file, format!("# unchanged\n{first}\n")).unwrap();
        ticketers.reread_key_file().expect("reread");
        let again = ticketers.for_server(&simple, &material).expect("simple");
        assert!(Arc::ptr_eq(&again, &s));
        ticketers.finish_build(true);

        // A bad file fails; the keys in use stay.
        std::fs::write(&file, "not a key\n").unwrap();
        let error = ticketers.reread_key_file().unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        let still = ticketers.for_server(&simple, &material).expect("simple");
        assert!(Arc::ptr_eq(&still, &s));
        ticketers.finish_build(true);

        // A new first key: new ticketers, which still open the old key's tickets.
        let second = crate::tls::generate_key_line().unwrap();
        std::fs::write(&file, format!("{second}\n{first}\n")).unwrap();
        ticketers.reread_key_file().expect("reread");
        let rotated = ticketers.for_server(&simple, &material).expect("simple");
        assert!(!Arc::ptr_eq(&rotated, &s));
        assert!(rotated.decrypt(&ticket).is_some());
        // A build that fails forgets the new keys...
        ticketers.finish_build(false);
        assert!(Arc::ptr_eq(
            &ticketers.for_server(&simple, &material).expect("simple"),
            &s
        ));
        ticketers.finish_build(true);
        // ...and one that succeeds keeps them.
        std::fs::write(&file, format!("{second}\n")).unwrap();
        ticketers.reread_key_file().expect("reread");
        let dropped = ticketers.for_server(&simple, &material).expect("simple");
        ticketers.finish_build(true);
        assert_eq!(dropped.decrypt(&ticket), None, "the old key is gone");
        assert_eq!(ticketers.file_keys().map(|k| k.len()), Some(1));
        let kept = ticketers.for_server(&simple, &material).expect("simple");
        assert!(Arc::ptr_eq(&kept, &dropped));
        let _ = std::fs::remove_dir_all(&dir);
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
