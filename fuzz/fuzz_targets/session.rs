#![no_main]

// The body lives in the library so `cargo test` replays the corpus too.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ws_relay::fuzzing::session(data));
