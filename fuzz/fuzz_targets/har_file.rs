//! See reprise_dispatcher::fuzz::har_file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reprise_dispatcher::fuzz::har_file(data));
