//! Fuzzes Istio's path normalisation modes: idempotent, no dot segment left (`ringress::fuzzing::path`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringress::fuzzing::path(data));
