//! A SetPayloadRequest (protobuf bytes) validated as the gRPC service does never panics; a
//! refusal is INVALID_ARGUMENT with a message. The body is
//! `kps_connector_core::fuzzing::set_payload_validation`, which the core's tests also run over
//! the kept corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kps_connector_core::fuzzing::set_payload_validation(data);
});
