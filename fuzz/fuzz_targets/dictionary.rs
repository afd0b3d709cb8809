//! Fuzz target `dictionary`: the FreeRADIUS dictionary parser over several files that may
//! `$INCLUDE` each other (NUL separates files, each file's first line is its name). The
//! checks are in `radacctd_fuzz::dictionary`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    radacctd_fuzz::dictionary(data);
});
