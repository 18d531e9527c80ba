//! Session-ticket keys from a file (`--session-ticket-keys`), so that every replica of
//! a gateway seals and opens the same tickets: a client that resumes on another
//! process behind the same load balancer skips its full handshake there too.
//!
//! # The file
//!
//! Text, one key per line, each the base64 (standard alphabet, padding optional) of
//! [`KEY_BYTES`] random bytes: a 16-byte key name and a 32-byte secret. `#` starts a
//! comment; blank lines are ignored. The **first** key seals new tickets, **every**
//! key opens them, so an operator rotates by writing a new key first, keeping the
//! previous one until the tickets it sealed have expired, then dropping it.
//! [`generate_key_line`] makes a line (`ringress generate-ticket-key`), as does
//! `openssl rand -base64 48`.
//!
//! # Tickets
//!
//! [`FileTicketer`] is one trust setting's view of the keys (see [`super::tickets`]: servers
//! with different client-certificate settings never open each other's tickets). Each
//! key's AEAD key is derived with HKDF-SHA256 (salt [`HKDF_SALT`], input the key's
//! secret, info the trust fingerprint) into an AES-256-GCM key. A ticket is
//!
//! ```text
//! key name (16) ‖ nonce (12, random) ‖ AES-256-GCM(plaintext) ‖ tag (16)
//! ```
//!
//! with the key name as additional data. Opening looks the name up and opens; a ticket
//! that is short, names no key in the file, or does not authenticate is `None`, which
//! rustls answers with a full handshake.
//!
//! Read on the control thread at start and at every reload; shards only ever call
//! `encrypt` and `decrypt`, which take no lock.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::hkdf::{HKDF_SHA256, Prk, Salt};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use rustls::server::ProducesTickets;

/// Bytes of one key as the file holds it: [`NAME_BYTES`] of name, then the secret.
const KEY_BYTES: usize = NAME_BYTES + SECRET_BYTES;
/// Bytes of a key's name, which starts every ticket it seals.
const NAME_BYTES: usize = 16;
/// Bytes of a key's secret, HKDF's input keying material.
const SECRET_BYTES: usize = 32;
/// The largest key file read: far more than [`MAX_KEYS`] lines of comments and keys.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Keys one file may hold; rotation needs two or three.
const MAX_KEYS: usize = 16;
/// HKDF's salt: what the derived keys are for, so they are never those of another use
/// of the same secret.
const HKDF_SALT: &[u8] = b"ringress session ticket key v1";
/// What `lifetime()` tells clients, as rustls' own `Ticketer` does (6 hours).
const TICKET_LIFETIME_SECS: u32 = 6 * 60 * 60;

/// The AES-GCM tag after the ciphertext.
const TAG_BYTES: usize = 16;
/// The shortest ticket: a name, a nonce and the tag of an empty plaintext.
const MIN_TICKET_BYTES: usize = NAME_BYTES + NONCE_LEN + TAG_BYTES;

/// Base64 with the standard alphabet, padding accepted or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What is wrong with a key file, or with making keys.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    #[error("cannot read the session ticket keys {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: more than the {MAX_FILE_BYTES} bytes allowed for a session ticket key file", path.display())]
    TooLarge { path: PathBuf },

    #[error("{} line {line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        problem: LineProblem,
    },

    #[error(
        "{}: no session ticket key (each line is the base64 of {KEY_BYTES} random bytes; \
         `ringress generate-ticket-key` or `openssl rand -base64 48` makes one)",
        path.display()
    )]
    NoKeys { path: PathBuf },

    #[error("{}: {count} session ticket keys, more than the {MAX_KEYS} allowed", path.display())]
    TooManyKeys { path: PathBuf, count: usize },

    #[error("the system random number generator failed")]
    Random,

    #[error("deriving a session ticket key failed")]
    Derive,
}

/// What is wrong with one line of a key file.
#[derive(Debug, thiserror::Error)]
pub enum LineProblem {
    #[error("not base64 (standard alphabet): {0}")]
    NotBase64(base64::DecodeError),

    #[error("a ticket key is {KEY_BYTES} bytes of base64, this one decodes to {0} bytes")]
    WrongLength(usize),

    #[error("the same key name (its first {NAME_BYTES} bytes) as line {first}")]
    DuplicateName { first: usize },
}

/// One key of the file: its name, the HKDF pseudo-random key of its secret (which
/// zeroes itself when dropped), and the line it is on.
struct FileKey {
    name: [u8; NAME_BYTES],
    prk: Prk,
    line: usize,
}

/// The keys of a key file, first the one that seals. No secret is ever printed.
pub(crate) struct TicketKeys {
    path: PathBuf,
    keys: Vec<FileKey>,
    /// SHA-256 over every name and secret in order: equal keys, equal digests.
    digest: [u8; 32],
}

impl TicketKeys {
    /// Reads and parses the key file at `path`; warns when any user may read it. (Group
    /// read is how the service's own group gets it: `0640` with group `ringress` under
    /// systemd, `0440` with the pod's `fsGroup` for a Kubernetes Secret.)
    pub(crate) fn load(path: &Path) -> Result<TicketKeys, TicketKeyError> {
        let read_error = |source| TicketKeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mode = file.metadata().map_err(read_error)?.permissions().mode();
        if mode & 0o004 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format_args!("{:04o}", mode & 0o7777),
                "the session ticket key file can be read by any user: whoever reads it can \
                 open the tickets it seals (and with them recorded TLS 1.2 sessions); \
                 `chmod 640` it, readable by ringress's group only (defaultMode: 0440 with \
                 the pod's fsGroup for a Kubernetes Secret)"
            );
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(TicketKeyError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        TicketKeys::parse(path, &text)
    }

    /// The keys in `text`, the contents of the file `path` (named in errors).
    pub(crate) fn parse(path: &Path, text: &str) -> Result<TicketKeys, TicketKeyError> {
        let salt = Salt::new(HKDF_SHA256, HKDF_SALT);
        let mut keys: Vec<FileKey> = Vec::new();
        let mut digest = digest::Context::new(&digest::SHA256);
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let problem = |problem| TicketKeyError::Line {
                path: path.to_path_buf(),
                line: line_number,
                problem,
            };
            let content = line
                .split_once('#')
                .map_or(line, |(before, _)| before)
                .trim();
            if content.is_empty() {
                continue;
            }
            let bytes = BASE64
                .decode(content)
                .map_err(|e| problem(LineProblem::NotBase64(e)))?;
            if bytes.len() != KEY_BYTES {
                return Err(problem(LineProblem::WrongLength(bytes.len())));
            }
            let (name, secret) = bytes.split_at(NAME_BYTES);
            let name: [u8; NAME_BYTES] = name.try_into().expect("split at NAME_BYTES");
            if let Some(first) = keys.iter().find(|k| k.name == name) {
                return Err(problem(LineProblem::DuplicateName { first: first.line }));
            }
            digest.update(&bytes);
            keys.push(FileKey {
                name,
                prk: salt.extract(secret),
                line: line_number,
            });
        }
        if keys.is_empty() {
            return Err(TicketKeyError::NoKeys {
                path: path.to_path_buf(),
            });
        }
        if keys.len() > MAX_KEYS {
            return Err(TicketKeyError::TooManyKeys {
                path: path.to_path_buf(),
                count: keys.len(),
            });
        }
        Ok(TicketKeys {
            path: path.to_path_buf(),
            keys,
            digest: digest.finish().as_ref().try_into().expect("SHA-256"),
        })
    }

    /// The file the keys came from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// How many keys the file holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The first bytes of the sealing key's name in hex: enough for an operator to
    /// tell which key is first, and nothing secret (every ticket starts with it).
    pub(crate) fn sealing_key_id(&self) -> String {
        self.keys[0].name[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl PartialEq for TicketKeys {
    fn eq(&self, other: &TicketKeys) -> bool {
        self.digest == other.digest
    }
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeys")
            .field("path", &self.path)
            .field("keys", &self.keys.len())
            .field("sealing", &self.sealing_key_id())
            .finish_non_exhaustive()
    }
}

/// One trust setting's ticketer over the keys of a file; see the module doc.
pub(crate) struct FileTicketer {
    /// In the file's order: the first seals.
    keys: Vec<(/* name */ [u8; NAME_BYTES], LessSafeKey)>,
    random: SystemRandom,
}

impl FileTicketer {
    /// The AEAD keys of `keys` for servers whose trust fingerprint is `trust`.
    pub(crate) fn new(keys: &TicketKeys, trust: &[u8]) -> Result<FileTicketer, TicketKeyError> {
        let keys = keys
            .keys
            .iter()
            .map(|key| {
                let info = [trust];
                let okm = key
                    .prk
                    .expand(&info, &AES_256_GCM)
                    .map_err(|_| TicketKeyError::Derive)?;
                Ok((key.name, LessSafeKey::new(UnboundKey::from(okm))))
            })
            .collect::<Result<_, TicketKeyError>>()?;
        Ok(FileTicketer {
            keys,
            random: SystemRandom::new(),
        })
    }
}

impl fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTicketer")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (name, key) = self.keys.first()?;
        let mut nonce = [0; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(MIN_TICKET_BYTES + plain.len());
        ticket.extend_from_slice(name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name),
                &mut ticket[NAME_BYTES + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// `cipher` comes from the client: anything but a ticket one of the keys sealed for
    /// this trust setting is `None`. (A PSK identity is at most 2^16 - 1 bytes by its
    /// encoding, which bounds the copy.)
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < MIN_TICKET_BYTES {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_BYTES);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let (_, key) = self.keys.iter().find(|(n, _)| n == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut plain = sealed.to_vec();
        let len = key
            .open_in_place(nonce, Aad::from(name), &mut plain)
            .ok()?
            .len();
        plain.truncate(len);
        Some(plain)
    }
}

/// A new key line for the file: the base64 of [`KEY_BYTES`] bytes from the system's
/// random number generator (what `ringress generate-ticket-key` prints).
pub fn generate_key_line() -> Result<String, TicketKeyError> {
    let mut bytes = [0; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TicketKeyError::Random)?;
    Ok(STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUST: &[u8] = &[7; 32];
    const OTHER_TRUST: &[u8] = &[8; 32];

    /// A key line whose name and secret are `n`, repeated.
    fn line(n: u8) -> String {
        STANDARD.encode([n; KEY_BYTES])
    }

    fn keys(text: &str) -> TicketKeys {
        TicketKeys::parse(Path::new("keys.txt"), text).expect("valid keys")
    }

    fn ticketer(lines: &[u8], trust: &[u8]) -> FileTicketer {
        let text: Vec<String> = lines.iter().map(|&n| line(n)).collect();
        FileTicketer::new(&keys(&text.join("\n")), trust).expect("ticketer")
    }

    fn parse_error(text: &str) -> String {
        TicketKeys::parse(Path::new("keys.txt"), text)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_ticket_opens_to_what_was_sealed() {
        let t = ticketer(&[1], TRUST);
        for plain in [&b""[..], b"x", &[0xa5; 3000]] {
            let ticket = t.encrypt(plain).expect("sealed");
            assert_eq!(ticket.len(), MIN_TICKET_BYTES + plain.len());
            assert_eq!(t.decrypt(&ticket).as_deref(), Some(plain));
        }
        assert!(t.enabled());
        assert_eq!(t.lifetime(), 6 * 3600);
        // A fresh nonce each time.
        assert_ne!(t.encrypt(b"same"), t.encrypt(b"same"));
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = ticketer(&[1], TRUST);
        let rotating = ticketer(&[2, 1], TRUST);
        let rotated = ticketer(&[2], TRUST);

        let by_old = old.encrypt(b"session").expect("sealed");
        assert_eq!(by_old[..NAME_BYTES], [1; NAME_BYTES]);
        let by_rotating = rotating.encrypt(b"session").expect("sealed");
        assert_eq!(
            by_rotating[..NAME_BYTES],
            [2; NAME_BYTES],
            "the first key seals"
        );

        assert_eq!(
            rotating.decrypt(&by_old).as_deref(),
            Some(&b"session"[..]),
            "the second key still opens"
        );
        assert_eq!(
            rotated.decrypt(&by_rotating).as_deref(),
            Some(&b"session"[..])
        );
        assert_eq!(
            rotated.decrypt(&by_old),
            None,
            "a key dropped opens nothing"
        );
        assert_eq!(
            old.decrypt(&by_rotating),
            None,
            "a key not yet added opens nothing"
        );
    }

    #[test]
    fn another_trust_setting_opens_nothing() {
        let ticket = ticketer(&[1], TRUST).encrypt(b"session").expect("sealed");
        assert_eq!(ticketer(&[1], OTHER_TRUST).decrypt(&ticket), None);
        assert!(ticketer(&[1], TRUST).decrypt(&ticket).is_some());
    }

    #[test]
    fn anything_but_a_sealed_ticket_is_none_at_every_length() {
        let t = ticketer(&[2, 1], TRUST);
        let ticket = t.encrypt(b"a session of some length").expect("sealed");
        for len in 0..ticket.len() {
            assert_eq!(t.decrypt(&ticket[..len]), None, "truncated to {len}");
        }
        for index in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[index] ^= 0x01;
            assert_eq!(t.decrypt(&bad), None, "byte {index} flipped");
        }
        let mut longer = ticket.clone();
        longer.push(0);
        assert_eq!(t.decrypt(&longer), None, "a byte appended");
        for len in 0..200 {
            let zeros = vec![0; len];
            let noise: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
            // A known name with garbage after it, too.
            let named = vec![1; len];
            for garbage in [zeros, noise, named] {
                assert_eq!(t.decrypt(&garbage), None, "{len} bytes of garbage");
            }
        }
    }

    #[test]
    fn the_file_has_comments_blank_lines_and_optional_padding() {
        let text = format!(
            "# rotated 2024-05-01\n\n  {}  \n{} # the previous key\n\t\n",
            line(2),
            line(1)
        );
        let keys = keys(&text);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.sealing_key_id(), "02020202");
        assert_eq!(keys.path(), Path::new("keys.txt"));
        let sealed = FileTicketer::new(&keys, TRUST)
            .unwrap()
            .encrypt(b"s")
            .unwrap();
        assert_eq!(sealed[..NAME_BYTES], [2; NAME_BYTES]);
        // 32 bytes, with and without its padding: the same complaint.
        let short = STANDARD.encode([1; 32]);
        assert!(short.ends_with('='));
        for text in [short.clone(), short.trim_end_matches('=').to_owned()] {
            assert_eq!(
                parse_error(&format!("# keys\n{}\n{text}\n", line(1))),
                "keys.txt line 3: a ticket key is 48 bytes of base64, this one decodes to 32 bytes"
            );
        }
    }

    #[test]
    fn bad_files_are_refused_naming_the_line() {
        assert_eq!(
            parse_error(&format!("{}\n\n{}\n", line(1), line(1))),
            "keys.txt line 3: the same key name (its first 16 bytes) as line 1"
        );
        let mut same_name = [9; KEY_BYTES];
        same_name[NAME_BYTES..].fill(3);
        let error = parse_error(&format!("{}\n{}\n", line(9), STANDARD.encode(same_name)));
        assert!(
            error.starts_with("keys.txt line 2: the same key name"),
            "{error}"
        );
        let error = parse_error("c2VjcmV0!\n");
        assert!(error.starts_with("keys.txt line 1: not base64"), "{error}");
        let error = parse_error(&format!("{}=\n", line(1)));
        assert!(error.starts_with("keys.txt line 1: not base64"), "{error}");
        for empty in ["", "\n\n", "# only a comment\n"] {
            let error = parse_error(empty);
            assert!(
                error.starts_with("keys.txt: no session ticket key"),
                "{error}"
            );
        }
        let many: Vec<String> = (0..=MAX_KEYS as u8).map(line).collect();
        assert_eq!(
            parse_error(&many.join("\n")),
            format!("keys.txt: 17 session ticket keys, more than the {MAX_KEYS} allowed")
        );
    }

    #[test]
    fn keys_compare_by_content_and_print_no_secret() {
        let a = keys(&line(1));
        assert_eq!(a, keys(&format!("# same\n{}\n", line(1))));
        assert_ne!(a, keys(&line(2)));
        assert_ne!(a, keys(&format!("{}\n{}", line(1), line(2))));
        let printed = format!("{a:?} {:?}", FileTicketer::new(&a, TRUST).unwrap());
        assert!(!printed.contains("[1, 1"), "{printed}");
        assert!(!printed.contains(&line(1)[..8]), "{printed}");
    }

    #[test]
    fn generated_lines_are_keys() {
        let (a, b) = (generate_key_line().unwrap(), generate_key_line().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(keys(&format!("{a}\n{b}")).len(), 2);
    }

    #[test]
    fn load_reads_the_file_and_refuses_a_large_one() {
        let dir = std::env::temp_dir().join(format!("ringress-ticket-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(&path, format!("{}\n", line(1))).unwrap();
        assert_eq!(TicketKeys::load(&path).unwrap(), keys(&line(1)));
        std::fs::write(&path, "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        assert!(matches!(
            TicketKeys::load(&path),
            Err(TicketKeyError::TooLarge { .. })
        ));
        let missing = dir.join("missing");
        let error = TicketKeys::load(&missing).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read the session ticket keys"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
