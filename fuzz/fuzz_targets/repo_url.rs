#![no_main]
//! cargo-fuzz target; the body is grasp_fuzz_harness::repo_url.

libfuzzer_sys::fuzz_target!(|data: &[u8]| grasp_fuzz_harness::repo_url(data));
