#![no_main]
// The checks live in src/lib.rs, shared with tests/fuzz_corpus.rs (which replays the corpus).
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::frame_parser(data));
