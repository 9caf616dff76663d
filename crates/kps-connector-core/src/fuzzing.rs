//! The bodies of the workspace's fuzz targets (`fuzz/`, run by `cargo xtask fuzz`), kept here so
//! the ordinary tests replay the kept corpora (`fuzz/corpus/<target>/`) through the same code
//! without the fuzzer. Feature `testkit`; a connector never calls these at run time.
//!
//! Every function takes arbitrary bytes and panics only when an invariant breaks (a panic is
//! what the fuzzer reports as a crash):
//!
//! - [`transport_message_decode`]: decoding a TransportMessage never panics; what decodes
//!   encodes back to the same records, whole or split into batches.
//! - [`set_payload_validation`]: a SetPayloadRequest is validated whole as the gRPC service does;
//!   a refusal is INVALID_ARGUMENT naming the payload or the config.
//! - [`connector_params`]: a connector's parameter parsing and validation, for both directions,
//!   refuses bad metadata with an invalid-parameter error naming the field.
//!
//! [`replay_corpus`] runs a target over every file of a kept corpus, for the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::DynamicConfig;
use crate::connector::{Connector, ConnectorInfo, Direction};
use crate::error::{ConnectorError, ConnectorResult};
use crate::runtime::erased::{Erased, ErasedConnector};
use crate::transport::wire;

/// Decodes `data` as a TransportMessage; when it decodes, re-encoding gives the same timestamp
/// and records, the encoded size is what [`wire::record_encoded_len`] and
/// [`wire::header_encoded_len`] predict, and [`wire::encode_batches`] (with limits taken from
/// the input) splits the records within its limits without losing or reordering one.
pub fn transport_message_decode(data: &[u8]) {
    let Ok((timestamp, records)) = wire::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encoded = wire::encode(timestamp, &records);
    let predicted = wire::header_encoded_len(timestamp)
        + records
            .iter()
            .map(|r| wire::record_encoded_len(r.len()))
            .sum::<usize>();
    assert_eq!(encoded.len(), predicted, "encoded size");
    assert_eq!(
        wire::decode(encoded),
        Ok((timestamp, records.clone())),
        "round trip"
    );

    let max_records = usize::from(data.first().copied().unwrap_or(0) % 8) + 1;
    let max_bytes = usize::from(data.last().copied().unwrap_or(0)) * 4 + 1;
    let mut rebuilt = Vec::with_capacity(records.len());
    for message in wire::encode_batches(timestamp, &records, max_records, max_bytes) {
        let size = message.len();
        let (ts, batch) = match wire::decode(message) {
            Ok(decoded) => decoded,
            Err(e) => panic!("a batch does not decode: {e}"),
        };
        assert_eq!(ts, timestamp, "batch timestamp");
        assert!(
            !batch.is_empty() && batch.len() <= max_records,
            "{} records in a batch of at most {max_records}",
            batch.len()
        );
        assert!(
            size <= max_bytes || batch.len() == 1,
            "{size} bytes in a batch of at most {max_bytes}"
        );
        rebuilt.extend(batch);
    }
    assert_eq!(rebuilt, records, "batches lost or reordered records");
}

/// Decodes `data` as a SetPayloadRequest and validates it as the gRPC service does, against a
/// small connector of both directions and an ingress-only one (see [`SampleConnector`]), with
/// a dynamic config already holding both core keys.
pub fn set_payload_validation(data: &[u8]) {
    let mut initial = Map::new();
    initial.insert("log_level".to_owned(), Value::from("info"));
    initial.insert(
        "dead_letter_subject".to_owned(),
        Value::from("dlq.{stream}"),
    );
    let config = DynamicConfig::new(initial);
    for ingress_only in [false, true] {
        let connector = Erased(Arc::new(SampleConnector { ingress_only }));
        crate::grpc::validate::fuzz_request(&connector, &config, data);
    }
}

/// Parses `data` as JSON; when it is an object, runs `connector`'s parameter parsing and
/// validation (what SetPayload runs for a stream) for both directions, on the object as given
/// and after the gRPC path's trip through a protobuf `Struct`. Every refusal must be
/// [`ConnectorError::InvalidParameter`] with a field and a message.
pub fn connector_params<C: Connector>(connector: C, data: &[u8]) {
    let Ok(Value::Object(metadata)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let connector = Erased(Arc::new(connector));
    let name = connector.info().name;
    let via_grpc = crate::grpc::validate::through_struct(&metadata);
    for metadata in [&metadata, &via_grpc] {
        for direction in [Direction::Ingress, Direction::Egress] {
            match connector.parse(direction, metadata) {
                Ok(_) => {}
                Err(ConnectorError::InvalidParameter { field, message }) => assert!(
                    !field.is_empty() && !message.is_empty(),
                    "{name} {direction}: a refusal without a field or a message: `{field}`: {message:?}"
                ),
                Err(other) => panic!(
                    "{name} {direction}: parameters refused with {other:?}; a parameter error must be an invalid parameter"
                ),
            }
        }
    }
}

/// A kept corpus of this workspace: `fuzz/corpus/<target>/` (located from this crate's source
/// folder, so only within the workspace).
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Runs `target` on every file of the corpus folder `dir` and returns how many ran. Panics when
/// the folder is missing or empty (a moved corpus must not pass unnoticed) and, naming the
/// file, when the target panics on one.
pub fn replay_corpus(dir: &Path, target: impl Fn(&[u8])) -> usize {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_file())
            .collect(),
        Err(e) => panic!("cannot read the corpus {}: {e}", dir.display()),
    };
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    for file in &files {
        let data = match std::fs::read(file) {
            Ok(data) => data,
            Err(e) => panic!("cannot read {}: {e}", file.display()),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&data)));
        if outcome.is_err() {
            panic!(
                "the fuzz target panicked on the corpus file {}",
                file.display()
            );
        }
    }
    files.len()
}

/// The stream parameters of [`SampleConnector`].
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleParams {
    /// Must not be empty.
    pub name: String,
    /// Ingress streams only.
    #[serde(default)]
    pub batch: Option<u32>,
    /// Free labels.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The connector [`set_payload_validation`] validates against: parameters with a required
/// field, a direction rule and a list; it opens nothing.
#[derive(Debug, Clone, Copy)]
pub struct SampleConnector {
    /// Refuse egress streams, as an ingress-only connector does.
    pub ingress_only: bool,
}

#[async_trait::async_trait]
impl Connector for SampleConnector {
    type Params = SampleParams;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "sample",
            description: "the fuzz targets' connector",
            version: env!("CARGO_PKG_VERSION"),
            directions: if self.ingress_only {
                &[Direction::Ingress]
            } else {
                &[Direction::Ingress, Direction::Egress]
            },
        }
    }

    fn validate(&self, direction: Direction, params: &SampleParams) -> ConnectorResult<()> {
        if params.name.is_empty() {
            return Err(ConnectorError::invalid("name", "must not be empty"));
        }
        if direction == Direction::Egress && params.batch.is_some() {
            return Err(ConnectorError::invalid(
                "batch",
                "applies to ingress streams only",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_transport_corpus_replays() {
        let files = replay_corpus(
            &corpus_dir("transport_message_decode"),
            transport_message_decode,
        );
        assert!(files >= 3, "{files} files");
    }

    #[test]
    fn the_kept_set_payload_corpus_replays() {
        let files = replay_corpus(
            &corpus_dir("set_payload_validation"),
            set_payload_validation,
        );
        assert!(files >= 3, "{files} files");
    }

    #[test]
    fn sample_params_are_checked_per_direction() {
        connector_params(
            SampleConnector {
                ingress_only: false,
            },
            br#"{"name": "a", "batch": 3, "tags": ["x"]}"#,
        );
        let erased = Erased(Arc::new(SampleConnector {
            ingress_only: false,
        }));
        let metadata = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(
            erased
                .parse(
                    Direction::Ingress,
                    &metadata(serde_json::json!({"name": "a", "batch": 3}))
                )
                .is_ok()
        );
        assert!(matches!(
            erased.parse(Direction::Egress, &metadata(serde_json::json!({"name": "a", "batch": 3}))),
            Err(ConnectorError::InvalidParameter { field, .. }) if field == "batch"
        ));
    }

    #[test]
    #[should_panic(expected = "the fuzz target panicked on the corpus file")]
    fn a_panicking_target_names_the_file() {
        replay_corpus(&corpus_dir("transport_message_decode"), |_| panic!("boom"));
    }

    #[test]
    #[should_panic(expected = "cannot read the corpus")]
    fn a_missing_corpus_fails() {
        replay_corpus(&corpus_dir("no-such-target"), |_| {});
    }
}
