//! A TLS 1.3 client's record sealing, made from the traffic secret rustls' client
//! gives up: for the tests and fuzz targets of ringress's record layer, which must send
//! what rustls' own client never sends (a KeyUpdate in pieces, empty records, odd
//! content types). Compiled for tests and the `fuzzing` feature only.

use aws_lc_rs::aead::{
    AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
};
use rustls::{ClientConnection, ConnectionTrafficSecrets};

/// Seals records as the client would, with its extracted sending key.
pub(crate) struct ClientSealer {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl ClientSealer {
    /// The sealer of an established TLS 1.3 `client` (which it consumes).
    pub(crate) fn new(client: ClientConnection) -> ClientSealer {
        let (seq, secrets) = client.dangerous_extract_secrets().expect("secrets").tx;
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => unreachable!("TLS 1.3 suites only"),
        };
        ClientSealer {
            key: LessSafeKey::new(UnboundKey::new(algorithm, key.as_ref()).expect("key")),
            iv: iv.as_ref().try_into().expect("iv"),
            seq,
        }
    }

    /// One record carrying `payload` of inner content type `inner` (a length past
    /// what the header can say is written as 65535).
    pub(crate) fn record(&mut self, inner: impl Into<u8>, payload: &[u8]) -> Vec<u8> {
        let mut body = payload.to_vec();
        body.push(inner.into());
        let len = u16::try_from(body.len() + 16)
            .unwrap_or(u16::MAX)
            .to_be_bytes();
        let header = [23, 3, 3, len[0], len[1]];
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut body,
            )
            .expect("sealing");
        [&header[..], &body].concat()
    }
}
