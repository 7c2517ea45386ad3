#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| porto_engine::fuzz::tos_from_cmsgs(data));
