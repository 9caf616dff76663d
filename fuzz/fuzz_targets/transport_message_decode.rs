//! Decoding a TransportMessage never panics; what decodes re-encodes to the same records.
//! The body is `kps_connector_core::fuzzing::transport_message_decode`, which the core's tests
//! also run over the kept corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kps_connector_core::fuzzing::transport_message_decode(data);
});
