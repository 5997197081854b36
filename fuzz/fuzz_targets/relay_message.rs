#![no_main]
//! cargo-fuzz target; the body is grasp_fuzz_harness::relay_message.

libfuzzer_sys::fuzz_target!(|data: &[u8]| grasp_fuzz_harness::relay_message(data));
