//! The contract suite: every rule of the gRPC contract, checked over gRPC against a running
//! connector (ours in-process, or any connector in any language through `kpsctl conformance`).
//!
//! The suite needs one valid stream per direction the connector supports. It leaves the
//! connector with no streams.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::harness::{StreamDecl, event_view, grpc_client};
use crate::connector::Direction;
use crate::events::State;
use crate::grpc::convert::{json_to_struct, struct_to_json};
use crate::proto;
use crate::proto::connector_service_client::ConnectorServiceClient;

/// What the suite runs against.
#[derive(Debug, Clone)]
pub struct ContractSuite {
    /// The connector's gRPC endpoint, `http://host:port`.
    pub endpoint: String,
    /// The connector instance id.
    pub connector_id: String,
    /// Valid streams, one per supported direction; they are applied, changed and removed.
    pub streams: Vec<StreamDecl>,
    /// Metadata the connector must refuse, with the field its error must name.
    pub invalid_metadata: Vec<(Value, String)>,
    /// A direction the connector does not support, if there is one.
    pub unsupported_direction: Option<Direction>,
    /// How long a stream may take to show its status event.
    pub settle_timeout: Duration,
}

impl ContractSuite {
    /// A suite for the connector at `endpoint` with `streams` (one per supported direction).
    pub fn new(
        endpoint: impl Into<String>,
        connector_id: impl Into<String>,
        streams: Vec<StreamDecl>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            connector_id: connector_id.into(),
            streams,
            invalid_metadata: Vec::new(),
            unsupported_direction: None,
            settle_timeout: Duration::from_secs(10),
        }
    }

    /// Adds metadata that must be refused with an error naming `field`.
    pub fn refuses(mut self, metadata: Value, field: &str) -> Self {
        self.invalid_metadata.push((metadata, field.to_owned()));
        self
    }

    /// Declares a direction the connector must refuse.
    pub fn unsupported(mut self, direction: Direction) -> Self {
        self.unsupported_direction = Some(direction);
        self
    }

    /// Runs every check and reports each.
    pub async fn run(&self) -> ContractReport {
        let mut report = ContractReport::default();
        let client = match grpc_client(&self.endpoint).await {
            Ok(client) => client,
            Err(e) => {
                report.fail(
                    "connection: the connector answers gRPC",
                    format!("{}: {e}", self.endpoint),
                );
                return report;
            }
        };
        let mut run = Run {
            suite: self,
            client,
            report,
        };
        run.all().await;
        run.report
    }
}

/// One rule and whether it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The rule, as a sentence.
    pub rule: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen when it did not (or a note).
    pub detail: String,
}

/// The outcome of a suite run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContractReport {
    /// Every check, in order.
    pub checks: Vec<CheckResult>,
}

impl ContractReport {
    fn pass(&mut self, rule: impl Into<String>) {
        self.checks.push(CheckResult {
            rule: rule.into(),
            passed: true,
            detail: String::new(),
        });
    }

    fn fail(&mut self, rule: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(CheckResult {
            rule: rule.into(),
            passed: false,
            detail: detail.into(),
        });
    }

    fn check(&mut self, rule: impl Into<String>, result: Result<(), String>) {
        match result {
            Ok(()) => self.pass(rule),
            Err(detail) => self.fail(rule, detail),
        }
    }

    /// Whether every check held.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }

    /// A readable report, one line per check.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let mark = if check.passed { "PASS" } else { "FAIL" };
            out.push_str(&format!("{mark}  {}\n", check.rule));
            if !check.passed {
                out.push_str(&format!("      {}\n", check.detail));
            }
        }
        let failed = self.failures().len();
        out.push_str(&format!(
            "{} passed, {} failed\n",
            self.checks.len() - failed,
            failed
        ));
        out
    }

    /// Panics with the report unless every check held.
    pub fn assert_passed(&self) {
        assert!(self.passed(), "contract suite failed:\n{}", self.render());
    }
}

struct Run<'a> {
    suite: &'a ContractSuite,
    client: ConnectorServiceClient<Channel>,
    report: ContractReport,
}

fn expect_code<T>(result: Result<T, Status>, code: Code, naming: &str) -> Result<(), String> {
    match result {
        Ok(_) => Err(format!("accepted; expected {code:?} naming `{naming}`")),
        Err(status) if status.code() != code => Err(format!(
            "answered {:?} ({}); expected {code:?}",
            status.code(),
            status.message()
        )),
        Err(status) if !status.message().contains(naming) => Err(format!(
            "the message does not name `{naming}`: {}",
            status.message()
        )),
        Err(_) => Ok(()),
    }
}

impl Run<'_> {
    fn id(&self) -> String {
        self.suite.connector_id.clone()
    }

    async fn set(&mut self, payloads: Vec<proto::Payload>) -> Result<(), Status> {
        let request = proto::SetPayloadRequest {
            connector_id: self.id(),
            payloads,
        };
        self.client.set_payload(request).await.map(|_| ())
    }

    async fn set_streams(&mut self, streams: &[StreamDecl]) -> Result<(), Status> {
        self.set(streams.iter().map(StreamDecl::to_payload).collect())
            .await
    }

    async fn subscribed(&mut self) -> Result<Vec<proto::Stream>, String> {
        let request = proto::GetPayloadRequest {
            connector_id: self.id(),
            kind: proto::PayloadKind::Stream as i32,
        };
        let response = self
            .client
            .get_payload(request)
            .await
            .map_err(|s| format!("GetPayload STREAM failed: {s}"))?
            .into_inner();
        ok_status(response.status.as_ref())?;
        Ok(response
            .payloads
            .into_iter()
            .filter_map(|p| match p.object {
                Some(proto::payload::Object::Stream(s)) if s.subscribed => Some(s),
                _ => None,
            })
            .collect())
    }

    async fn config(&mut self) -> Result<serde_json::Map<String, Value>, String> {
        let request = proto::GetPayloadRequest {
            connector_id: self.id(),
            kind: proto::PayloadKind::Config as i32,
        };
        let response = self
            .client
            .get_payload(request)
            .await
            .map_err(|s| format!("GetPayload CONFIG failed: {s}"))?
            .into_inner();
        ok_status(response.status.as_ref())?;
        let configs: Vec<_> = response
            .payloads
            .into_iter()
            .filter_map(|p| match p.object {
                Some(proto::payload::Object::Config(c)) => Some(c),
                _ => None,
            })
            .collect();
        match configs.as_slice() {
            [config] => Ok(struct_to_json(config.metadata.as_ref())),
            other => Err(format!("expected one Config payload, got {}", other.len())),
        }
    }

    /// The status events' (stream id -> created_at), once every stream in `ids` has one.
    async fn statuses(&mut self, ids: &[String]) -> Result<Vec<(String, SystemTime)>, String> {
        let deadline = Instant::now() + self.suite.settle_timeout;
        loop {
            let response = self
                .client
                .get_events(proto::GetEventsRequest {
                    connector_id: self.id(),
                })
                .await
                .map_err(|s| format!("GetEvents failed: {s}"))?
                .into_inner();
            ok_status(response.status.as_ref())?;
            let events: Vec<_> = response
                .event_payloads
                .into_iter()
                .filter_map(event_view)
                .collect();
            if let Some(e) = events.iter().find(|e| e.created_at.is_none()) {
                return Err(format!(
                    "event {} of stream `{}` has no created_at",
                    e.id, e.stream_id
                ));
            }
            // A stream still starting changes its status on its own: wait until every stream has
            // settled (left PROVISIONING), so two reads compare like with like.
            let settled: Vec<(String, SystemTime)> = events
                .iter()
                .filter(|e| {
                    e.kind == "status"
                        && ids.contains(&e.stream_id)
                        && e.state != State::Provisioning
                })
                .filter_map(|e| e.created_at.map(|t| (e.stream_id.clone(), t)))
                .collect();
            if ids.iter().all(|id| settled.iter().any(|(s, _)| s == id)) {
                return Ok(settled);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not every stream of {ids:?} has a settled status (past PROVISIONING) within {:?}",
                    self.suite.settle_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn all(&mut self) {
        let streams = self.suite.streams.clone();
        if streams.is_empty() {
            self.report.fail(
                "setup: the suite has at least one valid stream",
                "no streams given",
            );
            return;
        }
        let start = self.set(Vec::new()).await;
        self.report.check(
            "set-payload: a request with no payloads is accepted (stops every stream)",
            start.map_err(|s| s.to_string()),
        );

        self.identity().await;
        self.payload_kinds().await;

        // The declared set is what runs.
        let applied = self.set_streams(&streams).await;
        self.report.check(
            "set-payload: a valid stream set is accepted with OK",
            applied.map_err(|s| s.to_string()),
        );
        let listed = self.subscribed().await;
        self.report.check(
            "get-payload: STREAM lists every declared stream once, subscribed, with its fields",
            listed.and_then(|listed| same_streams(&listed, &streams)),
        );
        let ids: Vec<String> = streams.iter().map(|s| s.id.clone()).collect();
        let before = self.statuses(&ids).await;
        self.report.check(
            "get-events: every stream has a status event, every event has created_at",
            before.as_ref().map(|_| ()).map_err(Clone::clone),
        );

        // Unchanged streams keep running untouched.
        let again = self.set_streams(&streams).await;
        let after = self.statuses(&ids).await;
        self.report.check(
            "set-payload: an unchanged stream keeps running untouched (its status is not restarted)",
            match (again, before, after) {
                (Err(s), _, _) => Err(format!("re-applying the same set failed: {s}")),
                (Ok(()), Ok(before), Ok(after)) => {
                    let changed: Vec<_> = before.iter().filter(|b| !after.contains(b)).map(|(id, _)| id.clone()).collect();
                    if changed.is_empty() { Ok(()) } else { Err(format!("streams restarted: {changed:?}")) }
                }
                (_, Err(e), _) | (_, _, Err(e)) => Err(e),
            },
        );

        self.refusals(&streams).await;
        self.config_only(&streams).await;

        // A changed stream restarts with its new fields.
        let mut changed = streams.clone();
        changed[0].channel = format!("{}.changed", changed[0].channel);
        let result = async {
            self.set_streams(&changed)
                .await
                .map_err(|s| format!("refused: {s}"))?;
            let listed = self.subscribed().await?;
            same_streams(&listed, &changed)
        }
        .await;
        self.report.check(
            "set-payload: a stream whose fields changed runs with the new fields",
            result,
        );

        // A stream left out of the set stops.
        if changed.len() > 1 {
            let fewer = &changed[1..];
            let result = async {
                self.set_streams(fewer)
                    .await
                    .map_err(|s| format!("refused: {s}"))?;
                let listed = self.subscribed().await?;
                same_streams(&listed, fewer)
            }
            .await;
            self.report
                .check("set-payload: a stream missing from the set stops", result);
        }

        let result = async {
            self.set(Vec::new())
                .await
                .map_err(|s| format!("refused: {s}"))?;
            let listed = self.subscribed().await?;
            if listed.is_empty() {
                Ok(())
            } else {
                Err(format!("still subscribed: {:?}", ids_of(&listed)))
            }
        }
        .await;
        self.report.check(
            "set-payload: a request with no payloads stops every stream",
            result,
        );
    }

    async fn identity(&mut self) {
        let wrong = format!("{}-not-me", self.suite.connector_id);
        let get = self
            .client
            .get_payload(proto::GetPayloadRequest {
                connector_id: wrong.clone(),
                kind: proto::PayloadKind::Stream as i32,
            })
            .await;
        let set = self
            .client
            .set_payload(proto::SetPayloadRequest {
                connector_id: wrong.clone(),
                payloads: Vec::new(),
            })
            .await;
        let events = self
            .client
            .get_events(proto::GetEventsRequest {
                connector_id: wrong,
            })
            .await;
        let result = expect_code(get, Code::InvalidArgument, "connector_id")
            .map_err(|e| format!("GetPayload: {e}"))
            .and(
                expect_code(set, Code::InvalidArgument, "connector_id")
                    .map_err(|e| format!("SetPayload: {e}")),
            )
            .and(
                expect_code(events, Code::InvalidArgument, "connector_id")
                    .map_err(|e| format!("GetEvents: {e}")),
            );
        self.report.check(
            "identity: every method refuses another connector_id with INVALID_ARGUMENT naming connector_id",
            result,
        );
    }

    async fn payload_kinds(&mut self) {
        for (kind, rule) in [
            (
                0,
                "get-payload: kind UNSPECIFIED is refused with INVALID_ARGUMENT naming kind",
            ),
            (
                99,
                "get-payload: an unknown kind is refused with INVALID_ARGUMENT naming kind",
            ),
        ] {
            let result = self
                .client
                .get_payload(proto::GetPayloadRequest {
                    connector_id: self.id(),
                    kind,
                })
                .await;
            let checked = expect_code(result, Code::InvalidArgument, "kind");
            self.report.check(rule, checked);
        }
    }

    async fn refusals(&mut self, streams: &[StreamDecl]) {
        let base = &streams[0];
        let fresh = |suffix: &str| {
            let mut s = base.clone();
            s.id = format!("{}-{suffix}", base.id);
            s
        };
        let mut cases: Vec<(String, Vec<proto::Payload>, String)> = Vec::new();
        // Each request also carries a valid new stream: nothing of it may start.
        let bystander = fresh("bystander");
        let with_bystander = |bad: proto::Stream| {
            vec![
                bystander.to_payload(),
                proto::Payload {
                    object: Some(proto::payload::Object::Stream(bad)),
                },
            ]
        };
        let mut empty_id = fresh("x").to_proto();
        empty_id.id.clear();
        cases.push((
            "an empty stream id".into(),
            with_bystander(empty_id),
            "id".into(),
        ));
        let mut empty_channel = fresh("no-channel").to_proto();
        empty_channel.transport_channel.clear();
        cases.push((
            "an empty transport channel".into(),
            with_bystander(empty_channel),
            "transport_channel".into(),
        ));
        let mut unspecified = fresh("unspecified").to_proto();
        unspecified.direction = proto::StreamDirection::Unspecified as i32;
        cases.push((
            "an unspecified direction".into(),
            with_bystander(unspecified),
            "direction".into(),
        ));
        let mut unknown = fresh("unknown-direction").to_proto();
        unknown.direction = 7;
        cases.push((
            "an unknown direction".into(),
            with_bystander(unknown),
            "direction".into(),
        ));
        let duplicate = fresh("dup");
        cases.push((
            "a duplicate stream id".into(),
            vec![
                bystander.to_payload(),
                duplicate.to_payload(),
                duplicate.to_payload(),
            ],
            duplicate.id.clone(),
        ));
        cases.push((
            "a payload that is neither stream nor config".into(),
            vec![bystander.to_payload(), proto::Payload { object: None }],
            "payloads".into(),
        ));
        if let Some(direction) = self.suite.unsupported_direction {
            let mut unsupported = fresh("unsupported");
            unsupported.direction = direction;
            cases.push((
                format!("an unsupported direction ({direction})"),
                with_bystander(unsupported.to_proto()),
                "direction".into(),
            ));
        }
        for (metadata, field) in &self.suite.invalid_metadata {
            let mut bad = fresh("bad-metadata");
            bad.metadata = metadata.clone();
            cases.push((
                format!("metadata with a bad `{field}`"),
                with_bystander(bad.to_proto()),
                field.clone(),
            ));
        }

        for (what, payloads, naming) in cases {
            let before = self.subscribed().await;
            let result = self.set(payloads).await;
            let after = self.subscribed().await;
            let checked =
                expect_code(result, Code::InvalidArgument, &naming).and_then(|()| {
                    match (before, after) {
                        (Ok(before), Ok(after)) => {
                            if ids_of(&before) == ids_of(&after)
                                && same_streams(&after, streams).is_ok()
                            {
                                Ok(())
                            } else {
                                Err(format!(
                                    "the stream set changed: {:?} -> {:?}",
                                    ids_of(&before),
                                    ids_of(&after)
                                ))
                            }
                        }
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    }
                });
            self.report.check(
                format!("set-payload: a request with {what} is refused whole with INVALID_ARGUMENT naming `{naming}`, changing nothing"),
                checked,
            );
        }
    }

    async fn config_only(&mut self, streams: &[StreamDecl]) {
        let result = async {
            let before = self.config().await?;
            let key_a = "kps_conformance_a";
            let key_b = "kps_conformance_b";
            self.set(vec![config_payload(json!({ key_a: "1", key_b: "2" }))])
                .await
                .map_err(|s| format!("config refused: {s}"))?;
            self.set(vec![config_payload(json!({ key_b: "3" }))])
                .await
                .map_err(|s| format!("config refused: {s}"))?;
            let after = self.config().await?;
            if after.get(key_a) != Some(&json!("1")) || after.get(key_b) != Some(&json!("3")) {
                return Err(format!("not merged key by key: {after:?}"));
            }
            for (key, value) in &before {
                if after.get(key) != Some(value) {
                    return Err(format!("key `{key}` was lost by the merge"));
                }
            }
            let listed = self.subscribed().await?;
            same_streams(&listed, streams)
                .map_err(|e| format!("streams changed by a config-only request: {e}"))?;
            self.set(vec![config_payload(json!({ key_a: null, key_b: null }))])
                .await
                .map_err(|s| format!("config refused: {s}"))?;
            Ok(())
        }
        .await;
        self.report.check(
            "set-payload: a config-only request merges key by key, GetPayload CONFIG returns it, and the streams are untouched",
            result,
        );
    }
}

fn config_payload(value: Value) -> proto::Payload {
    proto::Payload {
        object: Some(proto::payload::Object::Config(proto::Config {
            metadata: Some(json_to_struct(
                value
                    .as_object()
                    .cloned()
                    .as_ref()
                    .unwrap_or(&Default::default()),
            )),
        })),
    }
}

fn ok_status(status: Option<&proto::ResponseStatus>) -> Result<(), String> {
    match status {
        Some(s) if s.code == proto::ResponseCode::Ok as i32 => Ok(()),
        Some(s) => Err(format!("status code {} ({})", s.code, s.message)),
        None => Err("no status in the response".to_owned()),
    }
}

fn ids_of(streams: &[proto::Stream]) -> Vec<String> {
    let mut ids: Vec<String> = streams.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    ids
}

fn same_streams(listed: &[proto::Stream], declared: &[StreamDecl]) -> Result<(), String> {
    if listed.len() != declared.len() {
        return Err(format!(
            "listed {:?}, declared {:?}",
            ids_of(listed),
            declared.iter().map(|d| &d.id).collect::<Vec<_>>()
        ));
    }
    for decl in declared {
        let Some(found) = listed.iter().find(|s| s.id == decl.id) else {
            return Err(format!("stream `{}` is not listed", decl.id));
        };
        let expected = decl.to_proto();
        if found.direction != expected.direction
            || found.transport_channel != expected.transport_channel
        {
            return Err(format!(
                "stream `{}` is listed with other fields: {found:?}",
                decl.id
            ));
        }
        if struct_to_json(found.metadata.as_ref()) != struct_to_json(expected.metadata.as_ref()) {
            return Err(format!(
                "stream `{}` is listed with other metadata",
                decl.id
            ));
        }
        if !found.subscribed {
            return Err(format!("stream `{}` is not marked subscribed", decl.id));
        }
    }
    Ok(())
}
