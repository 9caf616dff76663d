//! The mqtt connector's stream parameters: arbitrary bytes as JSON, parsed and validated for both
//! directions as SetPayload does, never panic and refuse with an invalid parameter. The body is
//! `kps_connector_core::fuzzing::connector_params`, which the connector's tests also run over
//! the kept corpus (`tests/mqtt/fuzz_corpus.rs`).
#![no_main]

use kps_connector_mqtt::MqttConnector;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kps_connector_core::fuzzing::connector_params(MqttConnector, data);
});
