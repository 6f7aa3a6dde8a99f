#![no_main]
//! Fuzz target: see `gambiarra::internals::fuzzing::translate_anthropic` for what it checks.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gambiarra::internals::fuzzing::translate_anthropic(data));
