//! Fuzzes the body framer: chunked, Content-Length and close-delimited bodies split anywhere (`ringress::fuzzing::body_framer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringress::fuzzing::body_framer(data));
