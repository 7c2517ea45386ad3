#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| porto_engine::fuzz::recvmsg_out(data));
