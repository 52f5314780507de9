//! See reprise_dispatcher::fuzz::analyzers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reprise_dispatcher::fuzz::analyzers(data));
