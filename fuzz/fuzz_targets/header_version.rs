#![no_main]
// See fuzz/src/checks.rs for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rosbackup_fuzz::checks::header_version(data));
