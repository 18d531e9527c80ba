//! Fuzzes the HTTP/1.1 request head parser and the accessors a shard calls (`ringress::fuzzing::request_head`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringress::fuzzing::request_head(data));
