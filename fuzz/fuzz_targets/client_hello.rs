//! Fuzzes the ClientHello reader a shard runs on a connection's first bytes, checked against rustls' Acceptor (`ringress::fuzzing::client_hello`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringress::fuzzing::client_hello(data));
