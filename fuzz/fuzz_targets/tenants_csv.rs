#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian::fuzzing::tenants_csv(data));
