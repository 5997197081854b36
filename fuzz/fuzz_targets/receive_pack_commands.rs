#![no_main]
//! cargo-fuzz target; the body is grasp_fuzz_harness::receive_pack_commands.

libfuzzer_sys::fuzz_target!(|data: &[u8]| grasp_fuzz_harness::receive_pack_commands(data));
