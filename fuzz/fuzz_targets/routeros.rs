//! Fuzz target `routeros`: bytes from a RouterOS router through the API word/sentence
//! decoder, the reply classifier and a whole disconnect conversation (the first byte
//! picks how the stream is cut into reads). The checks are in `radacctd_fuzz::routeros`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    radacctd_fuzz::routeros(data);
});
