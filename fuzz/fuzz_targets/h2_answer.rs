//! See reprise_replayer::fuzz::h2_answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reprise_replayer::fuzz::h2_answer(data));
