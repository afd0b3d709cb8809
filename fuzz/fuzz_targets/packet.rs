//! Fuzz target `packet`: one datagram through the accounting listener's steps — framing,
//! Request Authenticator and Message-Authenticator checks, the Accounting-Response, and
//! record extraction with MikroTik VSAs named through the embedded dictionary.
//! The checks are in `radacctd_fuzz::packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    radacctd_fuzz::packet(data);
});
