//! Conversions between the contract's protobuf types and the core's own.

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use crate::connector::Direction;
use crate::events::{Event, EventKind, Severity, State};
use crate::proto;

/// A protobuf Struct as a JSON object. Whole numbers (Struct keeps every number as a double)
/// become JSON integers, so `"qos": 1` deserializes into an integer field.
pub fn struct_to_json(value: Option<&prost_types::Struct>) -> Map<String, Value> {
    value
        .map(|s| {
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), value_to_json(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn value_to_json(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(Some(s))),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

fn number_to_json(n: f64) -> Value {
    const MAX_SAFE: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// A JSON object as a protobuf Struct.
pub fn json_to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The contract's direction for ours.
pub fn direction_to_proto(direction: Direction) -> proto::StreamDirection {
    match direction {
        Direction::Ingress => proto::StreamDirection::Ingress,
        Direction::Egress => proto::StreamDirection::Egress,
    }
}

fn state_to_proto(state: State) -> proto::State {
    match state {
        State::Provisioning => proto::State::Provisioning,
        State::Provisioned => proto::State::Provisioned,
        State::Failed => proto::State::Failed,
        State::Healthy => proto::State::Healthy,
        State::Unhealthy => proto::State::Unhealthy,
    }
}

fn severity_to_proto(severity: Severity) -> proto::Severity {
    match severity {
        Severity::Info => proto::Severity::Info,
        Severity::Warning => proto::Severity::Warning,
        Severity::Critical => proto::Severity::Critical,
    }
}

/// An event as the contract's EventPayload.
pub fn event_to_proto(event: Event) -> proto::EventPayload {
    let created_at = Some(prost_types::Timestamp::from(event.created_at));
    let metadata = (!event.metadata.is_empty()).then(|| json_to_struct(&event.metadata));
    let object = match event.kind {
        EventKind::Status => proto::event_payload::Object::Status(proto::Status {
            id: event.id,
            stream_id: event.stream_id,
            message: event.message,
            state: state_to_proto(event.state) as i32,
            created_at,
            metadata,
        }),
        EventKind::Alert(severity) => proto::event_payload::Object::Alert(proto::Alert {
            id: event.id,
            stream_id: event.stream_id,
            message: event.message,
            severity: severity_to_proto(severity) as i32,
            state: state_to_proto(event.state) as i32,
            created_at,
            metadata,
        }),
    };
    proto::EventPayload {
        object: Some(object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn struct_round_trip_keeps_integers_integers() {
        let original = json!({"qos": 1, "ratio": 0.5, "name": "x", "tags": ["a", null], "nested": {"ok": true}});
        let map = original.as_object().unwrap();
        let back = struct_to_json(Some(&json_to_struct(map)));
        assert_eq!(Value::Object(back), original);
    }
}
