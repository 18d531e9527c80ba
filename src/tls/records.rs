//! TLS 1.3 records of an established connection, protected by ringress itself.
//!
//! rustls completes the handshake. Once a TLS 1.3 connection is established, ringress
//! takes its traffic keys ([`Records::new`], rustls' kernel-connection API, the one kTLS
//! offload uses) and drops rustls' connection object, keeping only the small
//! [`KernelConnection`] that derives the next keys on a key update. What an idle
//! keep-alive connection then holds is two AEAD keys and two sequence numbers instead
//! of a whole rustls connection, and each record is encrypted from where its
//! plaintext lies straight into the send buffer and opened where it was received,
//! with no allocation or extra copy.
//!
//! The record layer is RFC 8446 section 5 and no more: a record is the header
//! (`application_data`, 0x0303, length), the AEAD ciphertext of the plaintext followed
//! by its real content type and any zero padding, and the tag; the nonce is the
//! direction's IV XORed with the record's sequence number; the header is the
//! additional data. After the handshake a client may send application data, alerts
//! (close_notify ends its side) and KeyUpdate, which may come split over records
//! (RFC 8446 5.1) as long as no other record comes between the pieces; anything else
//! is answered with the alert RFC 8446 names for it ([`RecordError::alert`]): an
//! empty alert or handshake record, a misplaced or interleaved message,
//! `unexpected_message`; a ciphertext over 2^14 + 256 bytes, `record_overflow`, before
//! its tag is looked at. Keys are refreshed before a suite's confidentiality limit is
//! reached, as rustls does for the connections it encrypts.

use aws_lc_rs::aead::{
    AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey,
};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::{AlertDescription, ConnectionTrafficSecrets, ContentType, HandshakeType};

/// Record header: content type, legacy version, length.
const HEADER_LEN: usize = 5;

/// AEAD tag of every TLS 1.3 suite.
const TAG_LEN: usize = 16;

/// Largest plaintext of one record (RFC 8446 5.1).
pub(crate) const MAX_PLAINTEXT: usize = 1 << 14;

/// Largest ciphertext a peer may send: plaintext, content type and padding, tag
/// (RFC 8446 5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;

/// Bytes a record adds to its plaintext: header, content type, tag.
pub(crate) const RECORD_OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;

/// A KeyUpdate message: a 4-byte handshake header and the one-byte request.
const KEY_UPDATE_LEN: usize = 5;

/// A KeyUpdate record.
const KEY_UPDATE_RECORD_LEN: usize = RECORD_OVERHEAD + KEY_UPDATE_LEN;

/// The legacy version every TLS 1.3 record carries.
const LEGACY_VERSION: [u8; 2] = [0x03, 0x03];

/// KeyUpdate values (RFC 8446 4.6.3).
const UPDATE_NOT_REQUESTED: u8 = 0;
const UPDATE_REQUESTED: u8 = 1;

/// Key updates a peer may send between two application data records (BoringSSL's
/// and rustls' bound): more is a peer making the server derive keys in a loop.
const MAX_KEY_UPDATES_IN_A_ROW: u8 = 32;

/// user_canceled alerts a client may send (rustls' bound on warning alerts).
const MAX_WARNING_ALERTS: u8 = 4;

/// Sequence number at which sending refreshes its key whatever the suite (rustls'
/// soft limit); nonces never repeat below 2^64.
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;

/// Why received records could not be used. Each names the alert the client gets.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum RecordError {
    #[error("record failed authentication (bad_record_mac)")]
    BadRecordMac,
    #[error("record of {0} bytes is larger than TLS allows")]
    RecordOverflow(usize),
    #[error("unexpected {0} after the handshake")]
    Unexpected(&'static str),
    #[error("malformed {0}")]
    Decode(&'static str),
    #[error("invalid {0}")]
    IllegalParameter(&'static str),
    #[error("client sent more than {MAX_KEY_UPDATES_IN_A_ROW} key updates without data")]
    TooManyKeyUpdates,
    #[error("client sent the {0:?} alert")]
    PeerAlert(AlertDescription),
    #[error("key update: {0}")]
    KeyUpdate(rustls::Error),
    #[error("record layer: {0}")]
    Internal(&'static str),
}

impl RecordError {
    /// The alert to send for this error; `None` when the client already ended the
    /// connection with an alert of its own.
    pub(crate) fn alert(&self) -> Option<AlertDescription> {
        Some(match self {
            RecordError::BadRecordMac => AlertDescription::BadRecordMac,
            RecordError::RecordOverflow(_) => AlertDescription::RecordOverflow,
            RecordError::Unexpected(_) | RecordError::TooManyKeyUpdates => {
                AlertDescription::UnexpectedMessage
            }
            RecordError::Decode(_) => AlertDescription::DecodeError,
            RecordError::IllegalParameter(_) => AlertDescription::IllegalParameter,
            RecordError::PeerAlert(_) => return None,
            RecordError::KeyUpdate(_) | RecordError::Internal(_) => AlertDescription::InternalError,
        })
    }
}

/// One direction's key, IV and next sequence number.
struct Direction {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Direction, rustls::Error> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => {
                return Err(rustls::Error::General(
                    "traffic keys of an unknown AEAD".into(),
                ));
            }
        };
        let unbound = UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| rustls::Error::General("traffic key of the wrong length".into()))?;
        let iv = <[u8; NONCE_LEN]>::try_from(iv.as_ref())
            .map_err(|_| rustls::Error::General("traffic IV of the wrong length".into()))?;
        Ok(Direction {
            key: LessSafeKey::new(unbound),
            iv,
            seq,
        })
    }

    /// The nonce of the next record (IV XOR sequence number), and the number taken.
    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(RecordError::Internal("sequence number exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// The record layer of an established TLS 1.3 server connection.
pub(crate) struct Records {
    /// Derives the next traffic keys on a key update (rustls' key schedule).
    kernel: KernelConnection<ServerConnectionData>,
    seal: Direction,
    open: Direction,
    /// Records sent with one key before it is refreshed: the suite's confidentiality
    /// limit, capped by [`SEQ_SOFT_LIMIT`].
    seal_limit: u64,
    /// The client asked for a key update: ours goes out before the next record.
    update_owed: bool,
    /// Key updates received since the last application data.
    updates_in_a_row: u8,
    /// user_canceled alerts received.
    warnings: u8,
    /// The first bytes of a KeyUpdate whose rest is in the next record(s).
    held: [u8; KEY_UPDATE_LEN - 1],
    held_len: u8,
}

impl Records {
    /// Whether `conn` can move to this record layer: a completed TLS 1.3 handshake.
    /// TLS 1.2 connections stay with rustls throughout.
    pub(crate) fn can_take(conn: &UnbufferedServerConnection) -> bool {
        !conn.is_handshaking() && conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
    }

    /// Takes the traffic keys of `conn`, which [`Records::can_take`], and whose every
    /// record was processed and every handshake record encoded (rustls is in its
    /// `WriteTraffic` state). Its config must have `enable_secret_extraction`.
    pub(crate) fn new(conn: UnbufferedServerConnection) -> Result<Records, rustls::Error> {
        let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
        let limit = kernel
            .negotiated_cipher_suite()
            .tls13()
            .map(|s| s.common.confidentiality_limit)
            .ok_or(rustls::Error::General("not a TLS 1.3 suite".into()))?;
        Ok(Records {
            seal: Direction::new(secrets.tx.0, secrets.tx.1)?,
            open: Direction::new(secrets.rx.0, secrets.rx.1)?,
            seal_limit: limit.min(SEQ_SOFT_LIMIT),
            kernel,
            update_owed: false,
            updates_in_a_row: 0,
            warnings: 0,
            held: [0; KEY_UPDATE_LEN - 1],
            held_len: 0,
        })
    }

    /// Lowers the records sealed per key, to see key updates without sending 2^24
    /// records.
    #[cfg(test)]
    pub(crate) fn set_seal_limit(&mut self, limit: u64) {
        self.seal_limit = limit;
    }

    /// Room [`Records::seal`] needs for `len` bytes of plaintext, a key update before
    /// each record included (a bound: one is rarely due).
    pub(crate) fn sealed_len(len: usize) -> usize {
        len + len.div_ceil(MAX_PLAINTEXT).max(1) * (RECORD_OVERHEAD + KEY_UPDATE_RECORD_LEN)
    }

    /// Encrypts `data` as application data records of at most 16 KiB into `out`;
    /// returns the bytes written, or `Err(Some(room))` when `out` is shorter than
    /// the `room` it needs (`Err(None)`: the keys could not be refreshed).
    #[inline]
    pub(crate) fn seal(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize, Option<usize>> {
        let room = Records::sealed_len(data.len());
        if out.len() < room {
            return Err(Some(room));
        }
        let mut written = 0;
        for chunk in data.chunks(MAX_PLAINTEXT) {
            let rest = &mut out[written..];
            let update = self.settle_keys(rest).map_err(|_| None)?;
            let record = self
                .seal_record(ContentType::ApplicationData, chunk, &mut rest[update..])
                .map_err(|_| None)?;
            written += update + record;
        }
        Ok(written)
    }

    /// Encrypts an alert (close_notify, or the alert of a [`RecordError`]) into
    /// `out`; returns the bytes written (0 when `out` is too small or the keys are
    /// spent: the connection ends without it).
    pub(crate) fn seal_alert(&mut self, alert: AlertDescription, out: &mut [u8]) -> usize {
        let level = match alert {
            AlertDescription::CloseNotify => 1,
            _ => 2,
        };
        let Ok(mut written) = self.settle_keys(out) else {
            return 0;
        };
        let payload = [level, u8::from(alert)];
        match out
            .get_mut(written..)
            .map(|rest| self.seal_record(ContentType::Alert, &payload, rest))
        {
            Some(Ok(n)) => written += n,
            _ => return 0,
        }
        written
    }

    /// Room [`Records::seal_alert`] needs.
    pub(crate) const ALERT_LEN: usize = RECORD_OVERHEAD + 2 + KEY_UPDATE_RECORD_LEN;

    /// Opens every whole record at the front of `incoming`, hands the plaintext of
    /// application data records to `deliver`, and removes them; a partial record
    /// stays for the next receive. Returns whether the client sent close_notify
    /// (what follows it is discarded).
    #[inline]
    pub(crate) fn open(
        &mut self,
        incoming: &mut Vec<u8>,
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<bool, RecordError> {
        let mut consumed = 0;
        let mut closed = false;
        let result = loop {
            let Some(rest) = incoming.get_mut(consumed..) else {
                break Ok(());
            };
            let Some(&[kind, major, minor, hi, lo]) = rest.get(..HEADER_LEN) else {
                break Ok(());
            };
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            // The legacy version is ignored on receipt (RFC 8446 5.1); as part of the
            // additional data it is still authenticated.
            if kind != u8::from(ContentType::ApplicationData) {
                break Err(RecordError::Unexpected(content_name(kind)));
            }
            if len > MAX_CIPHERTEXT {
                break Err(RecordError::RecordOverflow(len));
            }
            if rest.len() < HEADER_LEN + len {
                break Ok(());
            }
            let aad = [kind, major, minor, hi, lo];
            let opened = self
                .open_record(aad, &mut rest[HEADER_LEN..HEADER_LEN + len])
                .and_then(|(inner, plaintext)| self.received(inner, plaintext, &mut deliver));
            consumed += HEADER_LEN + len;
            match opened {
                Ok(false) => {}
                Ok(true) => {
                    closed = true;
                    consumed = incoming.len();
                    break Ok(());
                }
                Err(error) => break Err(error),
            }
        };
        incoming.drain(..consumed.min(incoming.len()));
        result.map(|()| closed)
    }

    /// Decrypts one record's body in place; returns its real content type and
    /// plaintext (padding removed).
    fn open_record<'a>(
        &mut self,
        aad: [u8; HEADER_LEN],
        body: &'a mut [u8],
    ) -> Result<(u8, &'a [u8]), RecordError> {
        let nonce = self.open.next_nonce()?;
        let opened = self
            .open
            .key
            .open_in_place(nonce, Aad::from(aad), body)
            .map_err(|_| RecordError::BadRecordMac)?;
        if opened.len() > MAX_PLAINTEXT + 1 {
            return Err(RecordError::RecordOverflow(opened.len()));
        }
        let Some(end) = opened.iter().rposition(|&b| b != 0) else {
            return Err(RecordError::Unexpected("record without a content type"));
        };
        Ok((opened[end], &opened[..end]))
    }

    /// Acts on one opened record; returns whether it was close_notify.
    fn received(
        &mut self,
        inner: u8,
        plaintext: &[u8],
        deliver: &mut impl FnMut(&[u8]),
    ) -> Result<bool, RecordError> {
        let kind = ContentType::from(inner);
        if self.held_len > 0 && kind != ContentType::Handshake {
            // RFC 8446 5.1: nothing may come between the pieces of a handshake message.
            return Err(RecordError::Unexpected(
                "record between the pieces of a KeyUpdate",
            ));
        }
        match kind {
            ContentType::ApplicationData => {
                self.updates_in_a_row = 0;
                if !plaintext.is_empty() {
                    deliver(plaintext);
                }
                Ok(false)
            }
            ContentType::Alert => match plaintext {
                [_, description] => match AlertDescription::from(*description) {
                    AlertDescription::CloseNotify => Ok(true),
                    // A warning that a close_notify follows (RFC 8446 6.1); a few
                    // are tolerated, as rustls does.
                    AlertDescription::UserCanceled if self.warnings < MAX_WARNING_ALERTS => {
                        self.warnings += 1;
                        Ok(false)
                    }
                    other => Err(RecordError::PeerAlert(other)),
                },
                // RFC 8446 5.4: an alert record without content is unexpected_message.
                [] => Err(RecordError::Unexpected("empty alert record")),
                _ => Err(RecordError::Decode("alert")),
            },
            ContentType::Handshake => self.handshake(plaintext).map(|()| false),
            _ => Err(RecordError::Unexpected(content_name(inner))),
        }
    }

    /// Post-handshake messages from a client: only a KeyUpdate, last in its record
    /// (the new key applies from the next record), whole or in pieces over
    /// consecutive records.
    fn handshake(&mut self, fragment: &[u8]) -> Result<(), RecordError> {
        if fragment.is_empty() {
            // RFC 8446 5.4: a handshake record without content is unexpected_message.
            return Err(RecordError::Unexpected("empty handshake record"));
        }
        let mut message = [0; KEY_UPDATE_LEN];
        let held = usize::from(self.held_len);
        message[..held].copy_from_slice(&self.held[..held]);
        let (piece, rest) = fragment.split_at(fragment.len().min(KEY_UPDATE_LEN - held));
        let have = held + piece.len();
        message[held..have].copy_from_slice(piece);
        if HandshakeType::from(message[0]) != HandshakeType::KeyUpdate {
            return Err(RecordError::Unexpected("handshake message"));
        }
        if have >= 4 && message[1..4] != [0, 0, 1] {
            return Err(RecordError::Decode("KeyUpdate"));
        }
        if have < KEY_UPDATE_LEN {
            self.held[..have].copy_from_slice(&message[..have]);
            self.held_len = have as u8;
            return Ok(());
        }
        self.held_len = 0;
        if !rest.is_empty() {
            return Err(RecordError::Unexpected("message after a KeyUpdate"));
        }
        self.key_update(message[4])
    }

    /// The client's KeyUpdate: its next records use the next key; if it asks, ours
    /// is refreshed too before the next record we send.
    fn key_update(&mut self, request: u8) -> Result<(), RecordError> {
        if request != UPDATE_NOT_REQUESTED && request != UPDATE_REQUESTED {
            return Err(RecordError::IllegalParameter("KeyUpdate request"));
        }
        self.updates_in_a_row += 1;
        if self.updates_in_a_row > MAX_KEY_UPDATES_IN_A_ROW {
            return Err(RecordError::TooManyKeyUpdates);
        }
        let (seq, secrets) = self
            .kernel
            .update_rx_secret()
            .map_err(RecordError::KeyUpdate)?;
        self.open = Direction::new(seq, secrets).map_err(RecordError::KeyUpdate)?;
        if request == UPDATE_REQUESTED {
            self.update_owed = true;
        }
        Ok(())
    }

    /// Sends our KeyUpdate and moves to the next key when the client asked for it or
    /// the key has sealed as many records as its suite allows; returns the bytes
    /// written into `out`.
    fn settle_keys(&mut self, out: &mut [u8]) -> Result<usize, RecordError> {
        // The KeyUpdate itself is the last record the old key seals.
        if !self.update_owed && self.seal.seq.saturating_add(1) < self.seal_limit {
            return Ok(0);
        }
        let message = [
            u8::from(HandshakeType::KeyUpdate),
            0,
            0,
            1,
            UPDATE_NOT_REQUESTED,
        ];
        let written = self.seal_record(ContentType::Handshake, &message, out)?;
        let (seq, secrets) = self
            .kernel
            .update_tx_secret()
            .map_err(RecordError::KeyUpdate)?;
        self.seal = Direction::new(seq, secrets).map_err(RecordError::KeyUpdate)?;
        self.update_owed = false;
        Ok(written)
    }

    /// Seals one record of `kind` carrying `plaintext` (at most 16 KiB) into the
    /// front of `out`, which has room for it; returns its length.
    fn seal_record(
        &mut self,
        kind: ContentType,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RecordError> {
        let body_len = plaintext.len() + 1;
        let record_len = HEADER_LEN + body_len + TAG_LEN;
        let record = out
            .get_mut(..record_len)
            .ok_or(RecordError::Internal("no room for a record"))?;
        let length = u16::try_from(body_len + TAG_LEN)
            .map_err(|_| RecordError::RecordOverflow(body_len))?
            .to_be_bytes();
        let header = [
            u8::from(ContentType::ApplicationData),
            LEGACY_VERSION[0],
            LEGACY_VERSION[1],
            length[0],
            length[1],
        ];
        let (head, rest) = record.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&header);
        // The plaintext is encrypted from where it lies straight into the record (no
        // copy first); the content type byte and the tag follow it.
        let (ciphertext, type_and_tag) = rest.split_at_mut(plaintext.len());
        let nonce = self.seal.next_nonce()?;
        self.seal
            .key
            .seal_out_of_place_scatter(
                nonce,
                Aad::from(header),
                plaintext,
                ciphertext,
                &[u8::from(kind)],
                type_and_tag,
            )
            .map_err(|_| RecordError::Internal("encryption failed"))?;
        Ok(record_len)
    }
}

/// A content type's name for errors.
fn content_name(kind: u8) -> &'static str {
    match ContentType::from(kind) {
        ContentType::ChangeCipherSpec => "change_cipher_spec record",
        ContentType::Alert => "plaintext alert record",
        ContentType::Handshake => "plaintext handshake record",
        ContentType::ApplicationData => "application data record",
        _ => "record of an unknown content type",
    }
}
