//! Published JWS test vectors checked with ringress's own key reading
//! ([`KeySet::parse`]) and signature check ([`jwt::parse`] then
//! [`Parsed::check_signature`](jwt::Parsed::check_signature)), so the verifier agrees
//! with other implementations byte for byte: RFC 7515 appendix A (HS256, RS256,
//! ES256), RFC 8037 A.4 (EdDSA over Ed25519) and the signatures of RFC 7520 §4.
//!
//! Each vector verifies, and a one-bit change to its signature or to its payload fails
//! with `Jwt verification fails`. What ringress refuses is refused by name, never
//! skipped: ES512 (RFC 7515 A.4, RFC 7520 §4.3; its P-521 keys are not usable) and the
//! unsecured `alg: none` (RFC 7515 A.5).
//!
//! The RFC 7520 and RFC 8037 payloads are text, not JSON, so they are no JWTs and
//! [`jwt::parse`] refuses them as a gateway must (`Jwt payload is an invalid JSON`);
//! their signatures are checked with [`jwt::verify_signature`], the layer under
//! `check_signature`, with the `alg` and `kid` their headers carry. The vectors' `exp`
//! lies in 2011 or is absent, so no time is checked here.
//!
//! The data is the RFCs' own (as the JOSE cookbook's JSON publishes RFC 7520's); keys
//! are given by their public members only, as a JWKS serves them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::KeySet;
use super::jwt::{self, JwtError};
use super::keys::KeySetError;

/// RFC 7515 A.1.1: the HMAC key of the HS256 example.
const RFC7515_A1_JWKS: &str = r#"{"keys":[{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}]}"#;

/// RFC 7515 A.1.1: the HS256 example JWS (`typ: JWT`; claims `iss: joe`, `exp` in 2011).
const RFC7515_A1_JWS: &str = r#"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"#;

/// RFC 7515 A.2.1: the RSA key of the RS256 example (its public members).
const RFC7515_A2_JWKS: &str = r#"{"keys":[{"kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"}]}"#;

/// RFC 7515 A.2.1: the RS256 example JWS, the claims of A.1.
const RFC7515_A2_JWS: &str = r#"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"#;

/// RFC 7515 A.3.1: the P-256 key of the ES256 example (its public members).
const RFC7515_A3_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

/// RFC 7515 A.3.1: the ES256 example JWS, the claims of A.1.
const RFC7515_A3_JWS: &str = r#"eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"#;

/// RFC 7515 A.4.1: the P-521 key of the ES512 example (its public members).
const RFC7515_A4_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk","y":"ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2"}]}"#;

/// RFC 7515 A.4.1: the ES512 example JWS (payload `Payload`).
const RFC7515_A4_JWS: &str = r#"eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn"#;

/// RFC 7515 A.5: the Unsecured JWS (`alg: none`, empty signature).
const RFC7515_A5_JWS: &str = r#"eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."#;

/// RFC 8037 A.1/A.2: the Ed25519 key (its public member `x`).
const RFC8037_A4_JWKS: &str =
    r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

/// RFC 8037 A.4: the EdDSA JWS of `Example of Ed25519 signing`.
const RFC8037_A4_JWS: &str = r#"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"#;

/// RFC 7520 §3.4: the RSA key of §4.1 and §4.2 (its public members).
const RFC7520_RSA_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"bilbo.baggins@hobbiton.example","use":"sig","n":"n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw","e":"AQAB"}]}"#;

/// RFC 7520 §3.2: the P-521 key of §4.3 (its public members).
const RFC7520_EC_P521_JWKS: &str = r#"{"keys":[{"kty":"EC","kid":"bilbo.baggins@hobbiton.example","use":"sig","crv":"P-521","x":"AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt","y":"AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1"}]}"#;

/// RFC 7520 §3.5: the symmetric key of §4.4 to §4.7 (`alg: HS256`).
const RFC7520_HMAC_JWKS: &str = r#"{"keys":[{"kty":"oct","kid":"018c0ae5-4d9b-471b-bfd6-eef314bc7037","use":"sig","alg":"HS256","k":"hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg"}]}"#;

/// RFC 7520 §4.8: the three keys of the multiple signatures (§3.4, §3.2, §3.5).
const RFC7520_4_8_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"bilbo.baggins@hobbiton.example","use":"sig","n":"n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw","e":"AQAB"},{"kty":"EC","kid":"bilbo.baggins@hobbiton.example","use":"sig","crv":"P-521","x":"AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt","y":"AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1"},{"kty":"oct","kid":"018c0ae5-4d9b-471b-bfd6-eef314bc7037","use":"sig","alg":"HS256","k":"hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg"}]}"#;

/// RFC 7520 §4 (Figure 8, encoded): the payload of every §4 example, a quote from
/// The Fellowship of the Ring (text, not JSON).
const RFC7520_PAYLOAD: &str = r#"SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4"#;

/// RFC 7520 §4.1.3: RS256 (RSASSA-PKCS1-v1_5), compact.
const RFC7520_4_1_JWS: &str = r#"eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg"#;

/// RFC 7520 §4.2.3: PS384 (RSASSA-PSS), compact.
const RFC7520_4_2_JWS: &str = r#"eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCdP6O8TTB5dDDItllVo6_1OLPpcbUrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqrYRXe8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1aCN_2_jLAeQTlqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4ifKo8DYM-X72Eaw"#;

/// RFC 7520 §4.3.3: ES512, compact.
const RFC7520_4_3_JWS: &str = r#"eyJhbGciOiJFUzUxMiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.AE_R_YZCChjn4791jSQCrdPZCNYqHXCTZH0-JZGYNlaAjP2kqaluUIIUnC9qvbu9Plon7KRTzoNEuT4Va2cmL1eJAQy3mtPBu_u_sDDyYjnAMDxXPn7XrT0lw-kvAD890jl8e2puQens_IEKBpHABlsbEPX6sFY8OcGDqoRuBomu9xQ2"#;

/// RFC 7520 §4.4.3: HS256, compact.
const RFC7520_4_4_JWS: &str = r#"eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0"#;

/// RFC 7520 §4.5.3: HS256 with detached content, compact (empty payload segment).
const RFC7520_4_5_JWS: &str = r#"eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9..s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0"#;

/// RFC 7520 §4.6.2: HS256 with only `alg` protected; `kid` is in the unprotected
/// header (JSON serialization only).
const RFC7520_4_6_PROTECTED: &str = r#"eyJhbGciOiJIUzI1NiJ9"#;

/// RFC 7520 §4.6.3.
const RFC7520_4_6_SIGNATURE: &str = r#"bWUSVaxorn7bEF1djytBd0kHv70Ly5pvbomzMWSOr20"#;

/// RFC 7520 §4.7.3: HS256 over the content only (no protected header; `alg` and
/// `kid` unprotected, JSON serialization only).
const RFC7520_4_7_SIGNATURE: &str = r#"xuLifqLGiblpv9zBpuZczWhNj1gARaLV3UxvxhJxZuk"#;

/// RFC 7520 §4.8.2 and §4.8.3: the first signature, RS256, `kid` unprotected.
const RFC7520_4_8_RS256_PROTECTED: &str = r#"eyJhbGciOiJSUzI1NiJ9"#;

const RFC7520_4_8_RS256_SIGNATURE: &str = r#"MIsjqtVlOpa71KE-Mss8_Nq2YH4FGhiocsqrgi5NvyG53uoimic1tcMdSg-qptrzZc7CG6Svw2Y13TDIqHzTUrL_lR2ZFcryNFiHkSw129EghGpwkpxaTn_THJTCglNbADko1MZBCdwzJxwqZc-1RlpO2HibUYyXSwO97BSe0_evZKdjvvKSgsIqjytKSeAMbhMBdMma622_BG5t4sdbuCHtFjp9iJmkio47AIwqkZV1aIZsv33uPUqBBCXbYoQJwt7mxPftHmNlGoOSMxR_3thmXTCm4US-xiNOyhbm8afKK64jU6_TPtQHiJeQJxz9G3Tx-083B745_AfYOnlC9w"#;

/// RFC 7520 §4.8.7 and §4.8.8: the third signature, HS256, all protected (the
/// signature of §4.4).
const RFC7520_4_8_HS256_PROTECTED: &str =
    r#"eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9"#;

const RFC7520_4_8_HS256_SIGNATURE: &str = r#"s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0"#;

/// The RFC 7520 §3.5 symmetric key's id, and the §3.4 RSA key's.
const HMAC_KID: &str = "018c0ae5-4d9b-471b-bfd6-eef314bc7037";
const RSA_KID: &str = "bilbo.baggins@hobbiton.example";

/// `segment` (base64url) with bit `mask` of its decoded byte `index` flipped.
fn flip(segment: &str, index: usize, mask: u8) -> String {
    let mut bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .expect("a base64url segment");
    bytes[index] ^= mask;
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The signature segment with one bit flipped, at its first, middle and last byte.
fn flipped_signatures(signature: &str) -> Vec<String> {
    let len = URL_SAFE_NO_PAD.decode(signature).unwrap().len();
    [(0, 0x80), (len / 2, 0x10), (len - 1, 0x01)]
        .into_iter()
        .map(|(index, mask)| flip(signature, index, mask))
        .collect()
}

/// The payload segment with one bit flipped: the case of its first lower-case letter,
/// so a JSON payload stays JSON (`"iss"` becomes `"Iss"`) and only the signature can
/// tell.
fn flipped_payload(payload: &str) -> String {
    let bytes = URL_SAFE_NO_PAD.decode(payload).unwrap();
    let index = bytes
        .iter()
        .position(u8::is_ascii_lowercase)
        .expect("a payload with a lower-case letter");
    flip(payload, index, 0x20)
}

/// A compact JWT vector: it parses and verifies with `jwks`; with one bit of its
/// signature or payload changed it still parses and fails verification.
fn assert_jwt_vector(source: &str, jwks: &str, token: &str) {
    let set = KeySet::parse(jwks).unwrap_or_else(|e| panic!("{source}: the key set: {e}"));
    let parsed = jwt::parse(token).unwrap_or_else(|e| panic!("{source}: {e}"));
    assert_eq!(parsed.check_signature(&set), Ok(()), "{source}");
    let [header, payload, signature] = segments(token);
    let mut changed: Vec<String> = flipped_signatures(signature)
        .iter()
        .map(|s| format!("{header}.{payload}.{s}"))
        .collect();
    changed.push(format!("{header}.{}.{signature}", flipped_payload(payload)));
    for token in &changed {
        let parsed = jwt::parse(token).unwrap_or_else(|e| panic!("{source}: {token}: {e}"));
        assert_eq!(
            parsed.check_signature(&set).map_err(JwtError::text),
            Err("Jwt verification fails"),
            "{source}: {token}"
        );
    }
}

/// A JWS whose payload is no JWT: `signature` over `protected.payload` verifies with
/// `jwks` under the `alg` and `kid` of the protected header merged with
/// `unprotected` (RFC 7515 §7.2.1's JOSE header); one bit changed in the signature or
/// the payload fails.
fn assert_jws_vector(
    source: &str,
    jwks: &str,
    protected: &str,
    unprotected: &str,
    payload: &str,
    signature: &str,
) {
    let set = KeySet::parse(jwks).unwrap_or_else(|e| panic!("{source}: the key set: {e}"));
    let mut header: serde_json::Map<String, Value> = match protected {
        "" => serde_json::Map::new(),
        p => serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap(),
    };
    let unprotected: serde_json::Map<String, Value> = serde_json::from_str(unprotected).unwrap();
    header.extend(unprotected);
    let alg: Algorithm = header["alg"].as_str().unwrap().parse().unwrap();
    let kid = header.get("kid").and_then(Value::as_str);
    let check = |payload: &str, signature: &str| {
        let signed = format!("{protected}.{payload}");
        jwt::verify_signature(&set, alg, kid, &signed, signature)
    };
    assert_eq!(check(payload, signature), Ok(()), "{source}");
    for changed in flipped_signatures(signature) {
        assert_eq!(
            check(payload, &changed).map_err(JwtError::text),
            Err("Jwt verification fails"),
            "{source}: {changed}"
        );
    }
    assert_eq!(
        check(&flipped_payload(payload), signature).map_err(JwtError::text),
        Err("Jwt verification fails"),
        "{source}"
    );
}

/// A compact text-payload vector: refused as a JWT for its payload, and its JWS
/// signature checked as [`assert_jws_vector`] does.
fn assert_compact_jws_vector(source: &str, jwks: &str, token: &str) {
    assert_eq!(
        jwt::parse(token).map(|_| ()).map_err(JwtError::text),
        Err("Jwt payload is an invalid JSON"),
        "{source}"
    );
    let [protected, payload, signature] = segments(token);
    assert_jws_vector(source, jwks, protected, "{}", payload, signature);
}

fn segments(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    parts.try_into().expect("three segments")
}

#[test]
fn rfc7515_a1_hs256_verifies_and_one_bit_fails() {
    assert_jwt_vector("RFC 7515 A.1", RFC7515_A1_JWKS, RFC7515_A1_JWS);
    let parsed = jwt::parse(RFC7515_A1_JWS).unwrap();
    assert_eq!(parsed.issuer.as_deref(), Some("joe"));
    assert_eq!(parsed.exp, Some(1300819380));
    // Padding on the signature is tolerated, as on the other segments.
    let padded = format!("{RFC7515_A1_JWS}=");
    let keys = KeySet::parse(RFC7515_A1_JWKS).unwrap();
    assert_eq!(jwt::parse(&padded).unwrap().check_signature(&keys), Ok(()));
}

#[test]
fn rfc7515_a2_rs256_verifies_and_one_bit_fails() {
    assert_jwt_vector("RFC 7515 A.2", RFC7515_A2_JWKS, RFC7515_A2_JWS);
}

#[test]
fn rfc7515_a3_es256_verifies_and_one_bit_fails() {
    assert_jwt_vector("RFC 7515 A.3", RFC7515_A3_JWKS, RFC7515_A3_JWS);
}

#[test]
fn rfc7515_a4_es512_and_a5_none_are_refused_by_name() {
    for token in [RFC7515_A4_JWS, RFC7515_A5_JWS, RFC7520_4_3_JWS] {
        assert_eq!(
            jwt::parse(token).map(|_| ()).map_err(JwtError::text),
            Err("Jwt header [alg] is not supported"),
            "{token}"
        );
    }
    // A P-521 key verifies nothing ringress accepts, so a set of only one is empty.
    for jwks in [RFC7515_A4_JWKS, RFC7520_EC_P521_JWKS] {
        assert_eq!(KeySet::parse(jwks).unwrap_err(), KeySetError::NoValidKeys);
    }
}

#[test]
fn a_key_that_fits_but_did_not_sign_fails_verification() {
    // RFC 7515 A.2's token has no `kid`: RFC 7520's RSA key is tried, and fails.
    let other = KeySet::parse(RFC7520_RSA_JWKS).unwrap();
    let parsed = jwt::parse(RFC7515_A2_JWS).unwrap();
    assert_eq!(
        parsed.check_signature(&other),
        Err(JwtError::VerificationFail)
    );
    // RFC 7515 A.1 is HS256: RFC 7520's HS256 key is tried, and fails; its ES256
    // sibling has no key of its type there.
    let other = KeySet::parse(RFC7520_HMAC_JWKS).unwrap();
    let parsed = jwt::parse(RFC7515_A1_JWS).unwrap();
    assert_eq!(
        parsed.check_signature(&other),
        Err(JwtError::VerificationFail)
    );
    let parsed = jwt::parse(RFC7515_A3_JWS).unwrap();
    assert_eq!(
        parsed.check_signature(&other),
        Err(JwtError::KidAlgMismatch)
    );
}

#[test]
fn rfc8037_a4_eddsa_verifies_and_one_bit_fails() {
    assert_compact_jws_vector("RFC 8037 A.4", RFC8037_A4_JWKS, RFC8037_A4_JWS);
    let set = KeySet::parse(RFC8037_A4_JWKS).unwrap();
    assert!(set.keys[0].fits(Algorithm::EdDSA));
    assert!(!set.keys[0].fits(Algorithm::ES256));
}

#[test]
fn rfc7520_4_1_rs256_verifies_and_one_bit_fails() {
    assert_compact_jws_vector("RFC 7520 §4.1", RFC7520_RSA_JWKS, RFC7520_4_1_JWS);
}

#[test]
fn rfc7520_4_2_ps384_verifies_and_one_bit_fails() {
    assert_compact_jws_vector("RFC 7520 §4.2", RFC7520_RSA_JWKS, RFC7520_4_2_JWS);
}

#[test]
fn rfc7520_4_4_hs256_verifies_and_one_bit_fails() {
    assert_compact_jws_vector("RFC 7520 §4.4", RFC7520_HMAC_JWKS, RFC7520_4_4_JWS);
    // The key names its `alg`, so it verifies HS256 only.
    let set = KeySet::parse(RFC7520_HMAC_JWKS).unwrap();
    assert_eq!(set.kids(), [HMAC_KID]);
    assert!(!set.keys[0].fits(Algorithm::HS512));
}

#[test]
fn every_rfc7520_section_4_example_signs_the_same_payload() {
    for token in [
        RFC7520_4_1_JWS,
        RFC7520_4_2_JWS,
        RFC7520_4_3_JWS,
        RFC7520_4_4_JWS,
    ] {
        assert_eq!(segments(token)[1], RFC7520_PAYLOAD);
    }
    let text = URL_SAFE_NO_PAD.decode(RFC7520_PAYLOAD).unwrap();
    assert!(
        String::from_utf8(text)
            .unwrap()
            .starts_with("It\u{2019}s a dangerous business")
    );
}

#[test]
fn rfc7520_4_5_detached_content_verifies_once_reattached() {
    // As a token its empty payload segment is no JWT form.
    assert_eq!(
        jwt::parse(RFC7520_4_5_JWS).map(|_| ()),
        Err(JwtError::BadFormat)
    );
    let [protected, detached, signature] = segments(RFC7520_4_5_JWS);
    assert_eq!(detached, "");
    assert_jws_vector(
        "RFC 7520 §4.5",
        RFC7520_HMAC_JWKS,
        protected,
        "{}",
        RFC7520_PAYLOAD,
        signature,
    );
}

#[test]
fn rfc7520_4_6_and_4_7_unprotected_headers_verify_at_the_jws_layer() {
    assert_jws_vector(
        "RFC 7520 §4.6",
        RFC7520_HMAC_JWKS,
        RFC7520_4_6_PROTECTED,
        &format!(r#"{{"kid":"{HMAC_KID}"}}"#),
        RFC7520_PAYLOAD,
        RFC7520_4_6_SIGNATURE,
    );
    assert_jws_vector(
        "RFC 7520 §4.7",
        RFC7520_HMAC_JWKS,
        "",
        &format!(r#"{{"alg":"HS256","kid":"{HMAC_KID}"}}"#),
        RFC7520_PAYLOAD,
        RFC7520_4_7_SIGNATURE,
    );
    // A token has nowhere to carry an unprotected header: §4.7 in compact form has an
    // empty header segment, and is refused for it.
    let compact = format!(".{RFC7520_PAYLOAD}.{RFC7520_4_7_SIGNATURE}");
    assert_eq!(jwt::parse(&compact).map(|_| ()), Err(JwtError::BadFormat));
}

#[test]
fn rfc7520_4_8_multiple_signatures_verify_but_es512_has_no_key() {
    // The P-521 key is skipped; the RSA and HMAC keys are read.
    let set = KeySet::parse(RFC7520_4_8_JWKS).unwrap();
    assert_eq!(set.kids(), [RSA_KID, HMAC_KID]);
    assert!(
        set.keys
            .iter()
            .all(|k| !k.fits(Algorithm::ES256) && !k.fits(Algorithm::ES384))
    );
    assert_jws_vector(
        "RFC 7520 §4.8 (RS256)",
        RFC7520_4_8_JWKS,
        RFC7520_4_8_RS256_PROTECTED,
        &format!(r#"{{"kid":"{RSA_KID}"}}"#),
        RFC7520_PAYLOAD,
        RFC7520_4_8_RS256_SIGNATURE,
    );
    assert_jws_vector(
        "RFC 7520 §4.8 (HS256)",
        RFC7520_4_8_JWKS,
        RFC7520_4_8_HS256_PROTECTED,
        "{}",
        RFC7520_PAYLOAD,
        RFC7520_4_8_HS256_SIGNATURE,
    );
    // The second signature, ES512, names its `alg` only in the unprotected header; a
    // token would need it protected, and ringress refuses ES512 there (§4.3 above).
    assert!("ES512".parse::<Algorithm>().is_err());
}
