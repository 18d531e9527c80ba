//! Fuzzes the configuration loader on any text (`ringress::fuzzing::config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringress::fuzzing::config(data));
