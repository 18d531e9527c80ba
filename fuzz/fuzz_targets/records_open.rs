//! Fuzzes ringress's TLS 1.3 record layer opening records a client sealed (any content type, any split) (`ringress::fuzzing::records_open`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringress::fuzzing::records_open(data));
