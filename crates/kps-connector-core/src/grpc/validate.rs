//! Validation of a whole SetPayload request before anything changes.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::convert::struct_to_json;
use crate::config::{DynamicConfig, validate_core_keys};
use crate::connector::Direction;
use crate::proto;
use crate::runtime::StreamEntry;
use crate::runtime::erased::ErasedConnector;
use crate::runtime::stream_set::StreamSpec;
use crate::transport::validate_subject;

/// A request that passed validation: what to apply.
#[derive(Default)]
pub struct ValidRequest {
    /// The merged config to put in force, when the request carried Config payloads.
    pub config: Option<Map<String, Value>>,
    /// The desired stream set, when the request carried Stream payloads or no payload at all.
    pub streams: Option<Vec<StreamEntry>>,
}

/// Validates every payload; the first problem refuses the whole request, naming the field.
pub fn validate_request(
    connector: &dyn ErasedConnector,
    config: &DynamicConfig,
    payloads: &[proto::Payload],
) -> Result<ValidRequest, String> {
    let mut request = ValidRequest::default();
    let mut streams = Vec::new();
    let mut seen = HashSet::new();
    let mut config_update: Option<Map<String, Value>> = None;
    for (index, payload) in payloads.iter().enumerate() {
        match &payload.object {
            None => return Err(format!("payloads[{index}]: neither a stream nor a config")),
            Some(proto::payload::Object::Config(c)) => {
                let update = struct_to_json(c.metadata.as_ref());
                config_update.get_or_insert_with(Map::new).extend(update);
            }
            Some(proto::payload::Object::Stream(s)) => {
                let entry = validate_stream(connector, index, s)?;
                if !seen.insert(entry.spec.id.clone()) {
                    return Err(format!(
                        "payloads[{index}].stream.id: duplicate stream id `{}`",
                        entry.spec.id
                    ));
                }
                streams.push(entry);
            }
        }
    }
    if let Some(update) = config_update {
        let merged = config.merged(&update);
        validate_core_keys(&merged).map_err(|e| format!("config: {e}"))?;
        connector
            .validate_config(&merged)
            .map_err(|e| format!("config: {e}"))?;
        request.config = Some(merged);
    }
    if !streams.is_empty() || payloads.is_empty() {
        request.streams = Some(streams);
    }
    Ok(request)
}

fn validate_stream(
    connector: &dyn ErasedConnector,
    index: usize,
    stream: &proto::Stream,
) -> Result<StreamEntry, String> {
    let at = format!("payloads[{index}].stream");
    if stream.id.is_empty() {
        return Err(format!("{at}.id: must not be empty"));
    }
    let id = &stream.id;
    let direction = match proto::StreamDirection::try_from(stream.direction) {
        Ok(proto::StreamDirection::Ingress) => Direction::Ingress,
        Ok(proto::StreamDirection::Egress) => Direction::Egress,
        Ok(proto::StreamDirection::Unspecified) => {
            return Err(format!(
                "{at}.direction: stream `{id}` has no direction (unspecified)"
            ));
        }
        Err(_) => {
            return Err(format!(
                "{at}.direction: stream `{id}` has an unknown direction {}",
                stream.direction
            ));
        }
    };
    let info = connector.info();
    if !info.supports(direction) {
        return Err(format!(
            "{at}.direction: stream `{id}`: the {} connector does not support {direction} streams",
            info.name
        ));
    }
    if stream.transport_channel.is_empty() {
        return Err(format!(
            "{at}.transport_channel: stream `{id}` has no transport channel"
        ));
    }
    validate_subject(&stream.transport_channel, direction == Direction::Egress)
        .map_err(|e| format!("{at}.transport_channel: stream `{id}`: {e}"))?;
    let metadata = struct_to_json(stream.metadata.as_ref());
    let params = connector
        .parse(direction, &metadata)
        .map_err(|e| format!("{at}.metadata: stream `{id}`: {e}"))?;
    Ok(StreamEntry {
        spec: StreamSpec {
            id: id.clone(),
            direction,
            transport_channel: stream.transport_channel.clone(),
            metadata,
        },
        params,
    })
}

/// The body of the `set_payload_validation` fuzz target (through
/// [`crate::fuzzing::set_payload_validation`]): `data` decoded as a SetPayloadRequest, its payloads
/// validated exactly as SetPayload validates them. Panics only when an invariant breaks: a refusal
/// is INVALID_ARGUMENT with a message naming the payload or the config; an accepted request holds
/// unique non-empty stream ids, each in a direction the connector supports, on a valid channel.
#[cfg(feature = "testkit")]
pub(crate) fn fuzz_request(connector: &dyn ErasedConnector, config: &DynamicConfig, data: &[u8]) {
    use prost::Message;

    let Ok(request) = proto::SetPayloadRequest::decode(data) else {
        return;
    };
    let payloads = &request.payloads;
    let valid = match validate_request(connector, config, payloads).map_err(super::refusal) {
        Ok(valid) => valid,
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            let message = status.message();
            assert!(
                message.starts_with("payloads[") || message.starts_with("config: "),
                "a refusal names the payload or the config: {message:?}"
            );
            return;
        }
    };
    let stream_payloads = payloads
        .iter()
        .filter(|p| matches!(p.object, Some(proto::payload::Object::Stream(_))))
        .count();
    let config_payloads = payloads.len() - stream_payloads;
    assert_eq!(valid.config.is_some(), config_payloads > 0);
    if let Some(merged) = &valid.config {
        assert!(
            validate_core_keys(merged).is_ok(),
            "accepted config {merged:?}"
        );
    }
    assert_eq!(
        valid.streams.is_some(),
        stream_payloads > 0 || payloads.is_empty()
    );
    let streams = valid.streams.unwrap_or_default();
    assert_eq!(streams.len(), stream_payloads);
    let mut ids = HashSet::new();
    let info = connector.info();
    for entry in &streams {
        let spec = &entry.spec;
        assert!(!spec.id.is_empty());
        assert!(ids.insert(spec.id.as_str()), "duplicate id {:?}", spec.id);
        assert!(info.supports(spec.direction));
        assert!(
            validate_subject(&spec.transport_channel, spec.direction == Direction::Egress).is_ok()
        );
    }
}

/// `metadata` after the trip a stream's metadata makes on the gRPC path (JSON to a protobuf
/// `Struct` in the client, back to JSON here; numbers become doubles on the way).
#[cfg(feature = "testkit")]
pub(crate) fn through_struct(metadata: &Map<String, Value>) -> Map<String, Value> {
    struct_to_json(Some(&super::convert::json_to_struct(metadata)))
}
