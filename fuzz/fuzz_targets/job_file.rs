//! See reprise_dispatcher::fuzz::job_file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reprise_dispatcher::fuzz::job_file(data));
