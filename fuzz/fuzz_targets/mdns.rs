#![no_main]
//! Fuzz target: see `gambiarra::fuzzing::mdns` for what it checks.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gambiarra::fuzzing::mdns(data));
