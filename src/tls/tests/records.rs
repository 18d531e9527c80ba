//! Tests of ringress's TLS 1.3 record layer ([`Records`]): a real rustls client and
//! rustls' unbuffered server complete a handshake in memory, the server side moves to
//! `Records`, and the client must read everything it seals and be understood in
//! everything it sends — data, key updates both ways, close_notify — while tampered,
//! oversized and out-of-place records are refused with the right alert.

use std::io::{Read, Write};

use rustls::{AlertDescription, ClientConnection, ContentType};

use super::*;
use crate::tls::client_sealer::ClientSealer;
use crate::tls::records::{MAX_PLAINTEXT, RECORD_OVERHEAD};
use crate::tls::{RecordError, Records};

/// A client and the server's record layer after a completed TLS 1.3 handshake (the
/// session ticket already delivered).
fn established() -> (ClientConnection, Records) {
    let (client, server, incoming) = unbuffered_pair();
    assert!(incoming.is_empty());
    assert!(Records::can_take(&server));
    (client, Records::new(server).unwrap())
}

/// The server's record layer and a sealer for the client's side.
fn established_sealer() -> (ClientSealer, Records) {
    let (client, records) = established();
    (ClientSealer::new(client), records)
}

/// A KeyUpdate message (update_not_requested).
const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];

/// The records of `data` written by the client.
fn client_sends(client: &mut ClientConnection, data: &[u8]) -> Vec<u8> {
    client.writer().write_all(data).unwrap();
    client_out(client)
}

/// What the client sent, opened by the server: (plaintext, close_notify seen).
fn open_all(records: &mut Records, incoming: &mut Vec<u8>) -> Result<(Vec<u8>, bool), RecordError> {
    let mut plain = Vec::new();
    let closed = records.open(incoming, |data| plain.extend_from_slice(data))?;
    Ok((plain, closed))
}

/// `data` sealed by the server.
fn sealed(records: &mut Records, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0; Records::sealed_len(data.len())];
    let n = records.seal(data, &mut out).unwrap();
    out.truncate(n);
    out
}

/// Feeds `wire` to the client and returns the plaintext it yields (read as it comes:
/// rustls holds at most 16 KiB of unread plaintext).
fn client_reads(client: &mut ClientConnection, mut wire: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    loop {
        let mut chunk = Vec::new();
        match client.reader().read_to_end(&mut chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
        plain.extend(chunk);
        if wire.is_empty() {
            return plain;
        }
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
    }
}

/// The content lengths of the records in `wire`.
fn record_lengths(mut wire: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    while let [_, _, _, hi, lo, rest @ ..] = wire {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        lengths.push(len);
        wire = &rest[len..];
    }
    lengths
}

#[test]
fn records_carry_data_both_ways() {
    let (mut client, mut records) = established();
    let mut incoming = client_sends(&mut client, b"GET / HTTP/1.1\r\n\r\n");
    let (plain, closed) = open_all(&mut records, &mut incoming).unwrap();
    assert_eq!(plain, b"GET / HTTP/1.1\r\n\r\n");
    assert!(!closed);
    assert!(incoming.is_empty());

    // 40 KiB: three records, none over 16 KiB of plaintext.
    let response: Vec<u8> = (0..40 * 1024).map(|i| (i % 251) as u8).collect();
    let wire = sealed(&mut records, &response);
    assert_eq!(
        record_lengths(&wire),
        vec![
            MAX_PLAINTEXT + 17,
            MAX_PLAINTEXT + 17,
            40 * 1024 - 2 * MAX_PLAINTEXT + 17
        ]
    );
    assert_eq!(wire.len(), response.len() + 3 * RECORD_OVERHEAD);
    assert_eq!(client_reads(&mut client, &wire), response);

    // And again: sequence numbers go on in both directions.
    incoming.extend(client_sends(&mut client, b"second"));
    assert_eq!(open_all(&mut records, &mut incoming).unwrap().0, b"second");
    assert_eq!(
        client_reads(&mut client, &sealed(&mut records, b"ok")),
        b"ok"
    );
}

#[test]
fn a_record_split_anywhere_is_opened_once_whole() {
    let (mut client, mut records) = established();
    let first = client_sends(&mut client, b"hello");
    let wire = [first.clone(), client_sends(&mut client, b", world")].concat();
    let mut incoming = Vec::new();
    let mut plain = Vec::new();
    for (i, byte) in wire.iter().enumerate() {
        incoming.push(*byte);
        records
            .open(&mut incoming, |data| plain.extend_from_slice(data))
            .unwrap();
        let received = i + 1;
        if received < first.len() {
            assert!(plain.is_empty(), "byte {i}");
            assert_eq!(incoming.len(), received, "byte {i}");
        } else if received == first.len() {
            assert_eq!(plain, b"hello");
            assert!(incoming.is_empty());
        } else if received < wire.len() {
            assert_eq!(incoming.len(), received - first.len(), "byte {i}");
        }
    }
    assert_eq!(plain, b"hello, world");
    assert!(incoming.is_empty());
}

#[test]
fn a_client_key_update_moves_both_directions_to_new_keys() {
    let (mut client, mut records) = established();
    for round in 0..3 {
        client.refresh_traffic_keys().unwrap();
        client.writer().write_all(b"after update").unwrap();
        let mut incoming = client_out(&mut client);
        let (plain, _) = open_all(&mut records, &mut incoming).unwrap();
        assert_eq!(plain, b"after update", "round {round}");
        // rustls asks for our update: a KeyUpdate record goes ahead of the data.
        let wire = sealed(&mut records, b"reply");
        assert_eq!(record_lengths(&wire), vec![5 + 17, 5 + 17], "round {round}");
        assert_eq!(client_reads(&mut client, &wire), b"reply", "round {round}");
        // Owed once: the next reply is one record.
        let wire = sealed(&mut records, b"again");
        assert_eq!(record_lengths(&wire).len(), 1, "round {round}");
        assert_eq!(client_reads(&mut client, &wire), b"again", "round {round}");
    }
}

#[test]
fn keys_are_refreshed_before_the_confidentiality_limit() {
    let (mut client, mut records) = established();
    records.set_seal_limit(2);
    let mut expected = Vec::new();
    let mut wire = Vec::new();
    for i in 0..7u8 {
        let data = vec![i; 100];
        wire.extend(sealed(&mut records, &data));
        expected.extend(data);
    }
    // Records of 100 bytes, never more than two under one key.
    let lengths = record_lengths(&wire);
    let updates = lengths.iter().filter(|&&l| l == 5 + 17).count();
    assert!(updates >= 3, "{lengths:?}");
    assert!(
        lengths.split(|&l| l == 5 + 17).all(|run| run.len() <= 2),
        "{lengths:?}"
    );
    assert_eq!(client_reads(&mut client, &wire), expected);
}

#[test]
fn a_tampered_record_is_refused_with_bad_record_mac() {
    let (mut client, mut records) = established();
    let mut incoming = client_sends(&mut client, b"GET / HTTP/1.1\r\n\r\n");
    let last = incoming.len() - 1;
    incoming[last] ^= 1;
    let error = open_all(&mut records, &mut incoming).unwrap_err();
    assert_eq!(error, RecordError::BadRecordMac);
    let alert = error.alert().unwrap();
    let mut out = vec![0; Records::ALERT_LEN];
    let n = records.seal_alert(alert, &mut out);
    assert!(matches!(
        feed_client(&mut client, &out[..n]),
        Err(rustls::Error::AlertReceived(AlertDescription::BadRecordMac))
    ));
}

#[test]
fn close_notify_ends_the_clients_side_and_ours_ends_the_clients_reading() {
    let (mut client, mut records) = established();
    client.writer().write_all(b"last").unwrap();
    client.send_close_notify();
    let mut incoming = client_out(&mut client);
    // Whatever follows close_notify is ignored.
    incoming.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
    let (plain, closed) = open_all(&mut records, &mut incoming).unwrap();
    assert_eq!(plain, b"last");
    assert!(closed);
    assert!(incoming.is_empty());

    let mut out = vec![0; Records::ALERT_LEN];
    let n = records.seal_alert(AlertDescription::CloseNotify, &mut out);
    feed_client(&mut client, &out[..n]).unwrap();
    let mut rest = Vec::new();
    assert_eq!(client.reader().read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn records_out_of_place_after_the_handshake_are_refused() {
    let (_client, mut records) = established();
    let cases: [(&[u8], RecordError); 5] = [
        (
            &[21, 3, 3, 0, 2, 2, 40],
            RecordError::Unexpected("plaintext alert record"),
        ),
        (
            &[20, 3, 3, 0, 1, 1],
            RecordError::Unexpected("change_cipher_spec record"),
        ),
        (
            &[22, 3, 3, 0, 4, 1, 0, 0, 0],
            RecordError::Unexpected("plaintext handshake record"),
        ),
        (&[23, 3, 3, 0x41, 1], RecordError::RecordOverflow(0x4101)),
        // Too short for a tag: fails authentication.
        (&[23, 3, 3, 0, 3, 1, 2, 3], RecordError::BadRecordMac),
    ];
    for (wire, expected) in cases {
        let mut incoming = wire.to_vec();
        let error = open_all(&mut records, &mut incoming).unwrap_err();
        assert_eq!(error, expected, "{wire:?}");
        assert!(error.alert().is_some());
    }
}

#[test]
fn key_updates_without_data_between_are_bounded() {
    let (mut client, mut records) = established();
    let mut incoming = Vec::new();
    for update in 1..=33 {
        client.refresh_traffic_keys().unwrap();
        incoming.extend(client_out(&mut client));
        let result = open_all(&mut records, &mut incoming);
        if update <= 32 {
            assert_eq!(result, Ok((Vec::new(), false)), "update {update}");
        } else {
            assert_eq!(result, Err(RecordError::TooManyKeyUpdates));
        }
    }
    // Data in between resets the count.
    let (mut client, mut records) = established();
    for update in 1..=40 {
        client.refresh_traffic_keys().unwrap();
        client.writer().write_all(b"x").unwrap();
        incoming = client_out(&mut client);
        let (plain, _) = open_all(&mut records, &mut incoming).unwrap();
        assert_eq!(plain, b"x", "update {update}");
    }
}

#[test]
fn a_key_update_in_pieces_over_consecutive_records_is_accepted() {
    for split in 1..KEY_UPDATE.len() {
        let (mut client, mut records) = established_sealer();
        let (first, second) = KEY_UPDATE.split_at(split);
        let mut incoming = client.record(ContentType::Handshake, first);
        assert_eq!(
            open_all(&mut records, &mut incoming),
            Ok((Vec::new(), false))
        );
        incoming = client.record(ContentType::Handshake, second);
        assert_eq!(
            open_all(&mut records, &mut incoming),
            Ok((Vec::new(), false))
        );
        // The server moved to the client's next key: a record under the old one fails.
        incoming = client.record(ContentType::ApplicationData, b"x");
        assert_eq!(
            open_all(&mut records, &mut incoming),
            Err(RecordError::BadRecordMac),
            "split at {split}"
        );
    }
    // One byte per record.
    let (mut client, mut records) = established_sealer();
    let mut incoming: Vec<u8> = KEY_UPDATE
        .iter()
        .flat_map(|b| client.record(ContentType::Handshake, &[*b]))
        .collect();
    assert_eq!(
        open_all(&mut records, &mut incoming),
        Ok((Vec::new(), false))
    );
    incoming = client.record(ContentType::ApplicationData, b"x");
    assert_eq!(
        open_all(&mut records, &mut incoming),
        Err(RecordError::BadRecordMac)
    );
}

#[test]
fn misplaced_pieces_and_empty_records_get_rfc_8446_alerts() {
    /// Records the client sends: (content type, content).
    type Sent<'a> = &'a [(ContentType, &'a [u8])];
    let cases: [(Sent, RecordError, AlertDescription); 6] = [
        (
            &[
                (ContentType::Handshake, &KEY_UPDATE[..2]),
                (ContentType::ApplicationData, b"x"),
            ],
            RecordError::Unexpected("record between the pieces of a KeyUpdate"),
            AlertDescription::UnexpectedMessage,
        ),
        (
            &[(ContentType::Handshake, &[24, 0, 0, 1, 0, 24])],
            RecordError::Unexpected("message after a KeyUpdate"),
            AlertDescription::UnexpectedMessage,
        ),
        (
            &[(ContentType::Alert, b"")],
            RecordError::Unexpected("empty alert record"),
            AlertDescription::UnexpectedMessage,
        ),
        (
            &[(ContentType::Handshake, b"")],
            RecordError::Unexpected("empty handshake record"),
            AlertDescription::UnexpectedMessage,
        ),
        (
            &[(ContentType::Handshake, &[4, 0, 0, 1])],
            RecordError::Unexpected("handshake message"),
            AlertDescription::UnexpectedMessage,
        ),
        (
            &[(ContentType::Handshake, &[24, 0, 0, 2, 0, 0])],
            RecordError::Decode("KeyUpdate"),
            AlertDescription::DecodeError,
        ),
    ];
    for (sent, error, alert) in cases {
        let (mut client, mut records) = established_sealer();
        let mut incoming: Vec<u8> = sent
            .iter()
            .flat_map(|(kind, payload)| client.record(*kind, payload))
            .collect();
        let got = open_all(&mut records, &mut incoming).unwrap_err();
        assert_eq!(got.alert(), Some(alert), "{sent:?}");
        assert_eq!(got, error, "{sent:?}");
    }
}

#[test]
fn an_oversized_record_is_record_overflow_whatever_its_tag() {
    let (_client, mut records) = established_sealer();
    let len = MAX_PLAINTEXT + 256 + 1;
    let mut incoming = vec![23, 3, 3];
    incoming.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    incoming.resize(5 + len, 0xab);
    let error = open_all(&mut records, &mut incoming).unwrap_err();
    assert_eq!(error, RecordError::RecordOverflow(len));
    assert_eq!(error.alert(), Some(AlertDescription::RecordOverflow));
}
