//! Fuzzes the HTTP/1.1 response head parser, for GET and HEAD requests (`ringress::fuzzing::response_head`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringress::fuzzing::response_head(data));
