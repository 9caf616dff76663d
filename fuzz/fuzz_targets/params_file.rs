//! The file connector's stream parameters: arbitrary bytes as JSON, parsed and validated for both
//! directions as SetPayload does, never panic and refuse with an invalid parameter. The body is
//! `kps_connector_core::fuzzing::connector_params`, which the connector's tests also run over
//! the kept corpus (`tests/fuzz_corpus.rs`).
#![no_main]

use kps_connector_file::FileConnector;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kps_connector_core::fuzzing::connector_params(FileConnector, data);
});
