#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| porto_engine::fuzz::xsk_rx_claims(data));
