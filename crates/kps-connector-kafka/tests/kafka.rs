//! The Kafka connector's behaviour against the real broker (`cargo xtask services up` starts it
//! on 127.0.0.1:9092) and the real NATS: 10,000 records each way over three partitions in order
//! per partition, a SIGKILL mid-ingress without loss, discovery, refused records and parameters,
//! the JSON envelope, and an unreachable cluster.

#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use common::{TopicReader, brokers, create_topic, order_violation, produce, producer};
use kps_connector_core::grpc::convert::struct_to_json;
use kps_connector_core::testkit::{
    ConnectorProcess, NatsProbe, StreamDecl, TestConnector, unique_name,
};
use kps_connector_core::{Bytes, State, proto};
use kps_connector_kafka::KafkaConnector;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `p<partition>-<seq>`, the payload the ingress tests produce to a given partition.
fn tagged(partition: i32, seq: usize) -> Bytes {
    Bytes::from(format!("p{partition}-{seq:06}"))
}

/// (partition, seq) from a `tagged` payload.
fn untag(record: &[u8]) -> (i32, u64) {
    let text = std::str::from_utf8(record).expect("utf-8 record");
    let (partition, seq) = text[1..].split_once('-').expect("p<partition>-<seq>");
    (
        partition.parse().expect("partition"),
        seq.parse().expect("seq"),
    )
}

#[tokio::test]
async fn ten_thousand_records_flow_from_three_partitions_to_nats_in_order_per_partition() {
    let topic = unique_name("kps-kafka-in3");
    create_topic(&topic, 3).await;
    let records: Vec<(Option<i32>, Option<&str>, Bytes)> = (0..10_000)
        .map(|i| {
            let partition = (i % 3) as i32;
            (Some(partition), None, tagged(partition, i / 3))
        })
        .collect();
    produce(&producer(), &topic, &records).await;

    let mut connector = TestConnector::start(KafkaConnector).await;
    let channel = unique_name("kps.kafka.in3");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "in3",
            channel.as_str(),
            json!({"brokers": brokers(), "topic": topic, "start": "earliest"}),
        )])
        .await
        .expect("stream accepted");
    let got = arrivals.collect(10_000, TIMEOUT).await;
    let extra = arrivals.drain(Duration::from_millis(500)).await;
    connector.shutdown().await;

    assert_eq!(got.len(), 10_000, "every record arrived");
    assert!(extra.is_empty(), "no record twice: {} more", extra.len());
    let distinct: HashSet<&Bytes> = got.iter().collect();
    assert_eq!(distinct.len(), 10_000, "no duplicates");
    let tags: Vec<(i32, u64)> = got.iter().map(|r| untag(r)).collect();
    assert_eq!(order_violation(&tags), None, "order per partition");
    let partitions: BTreeSet<i32> = tags.iter().map(|(p, _)| *p).collect();
    assert_eq!(partitions, BTreeSet::from([0, 1, 2]));
}

#[tokio::test]
async fn ten_thousand_records_flow_from_nats_to_three_partitions_in_order_per_key() {
    let topic = unique_name("kps-kafka-out3");
    create_topic(&topic, 3).await;
    let mut connector = TestConnector::start(KafkaConnector).await;
    let channel = unique_name("kps.kafka.out3");
    connector
        .apply(vec![StreamDecl::egress(
            "out3",
            channel.as_str(),
            json!({"brokers": brokers(), "topic": topic, "key": "/device", "compression": "lz4"}),
        )])
        .await
        .expect("stream accepted");
    connector
        .wait_for_state("out3", State::Healthy, TIMEOUT)
        .await;
    let devices = ["dev-a", "dev-b", "dev-c", "dev-d", "dev-e", "dev-f"];
    let records: Vec<Bytes> = (0..10_000)
        .map(|i| {
            Bytes::from(format!(
                r#"{{"device":"{}","seq":{i}}}"#,
                devices[i % devices.len()]
            ))
        })
        .collect();
    let probe = NatsProbe::connect().await;
    probe.publish_records(&channel, &records, 50).await;

    let reader = TopicReader::new(&topic, 3);
    let got = reader.read(10_000, TIMEOUT).await;
    let extra = reader.read(1, Duration::from_millis(500)).await;
    connector.shutdown().await;

    assert_eq!(got.len(), 10_000, "every record written");
    assert!(extra.is_empty(), "no record twice");
    let mut partition_of_key: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    let mut per_key = Vec::new();
    for message in &got {
        let key = message.key.clone().expect("every message has the key");
        let value: Value = serde_json::from_slice(&message.value).expect("JSON record");
        assert_eq!(value["device"].as_str().map(str::as_bytes), Some(&key[..]));
        let previous = partition_of_key.insert(key.clone(), message.partition);
        assert!(
            previous.is_none_or(|p| p == message.partition),
            "one partition per key"
        );
        per_key.push((key, value["seq"].as_u64().expect("seq")));
    }
    assert_eq!(order_violation(&per_key), None, "order per key");
    let used: BTreeSet<i32> = partition_of_key.values().copied().collect();
    assert!(used.len() >= 2, "keys spread over partitions: {used:?}");
}

#[tokio::test]
async fn sigkill_mid_ingress_then_restart_delivers_every_record_at_least_once() {
    const N: usize = 10_000;
    let topic = unique_name("kps-kafka-kill");
    create_topic(&topic, 3).await;
    let connector_id = unique_name("kps-kafka-kill");
    let state_dir = tempfile::tempdir().expect("state dir");
    let channel = unique_name("kps.kafka.kill");
    // A short session timeout: the killed member's partitions move to its successor within
    // seconds instead of the default 45.
    let stream = StreamDecl::ingress(
        "kill",
        channel.as_str(),
        json!({
            "brokers": brokers(),
            "topic": topic,
            "start": "earliest",
            "properties": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        }),
    );
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;

    // Produce at a steady pace (about 4,000 records/s) so the kill lands mid-stream.
    let paced_topic = topic.clone();
    let paced = tokio::spawn(async move {
        let producer = producer();
        for chunk in (0..N).collect::<Vec<_>>().chunks(200) {
            let records: Vec<_> = chunk
                .iter()
                .map(|i| {
                    let partition = (i % 3) as i32;
                    (Some(partition), None, tagged(partition, i / 3))
                })
                .collect();
            produce(&producer, &paced_topic, &records).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let process = || {
        ConnectorProcess::builder(env!("CARGO_BIN_EXE_kps-connector-kafka"), &connector_id)
            .state_dir(state_dir.path())
            .start()
    };
    let mut first = process();
    first.apply(std::slice::from_ref(&stream)).await;
    let mut received = arrivals.collect(2_000, TIMEOUT).await;
    assert!(
        received.len() >= 2_000,
        "the first process delivered records"
    );
    first.kill().await;
    let at_kill = received.len() + arrivals.drain(Duration::from_millis(200)).await.len();

    let mut second = process();
    second.apply(std::slice::from_ref(&stream)).await;
    paced.await.expect("all records produced");
    let mut seen: HashSet<Bytes> = received.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < N && Instant::now() < deadline {
        for record in arrivals.collect(1, Duration::from_millis(500)).await {
            seen.insert(record.clone());
            received.push(record);
        }
    }
    received.extend(arrivals.drain(Duration::from_millis(500)).await);
    drop(second);

    let distinct: HashSet<&Bytes> = received.iter().collect();
    let duplicates = received.len() - distinct.len();
    println!(
        "sigkill: {N} produced, {} arrived ({} before the kill), {} distinct, {duplicates} duplicates",
        received.len(),
        at_kill,
        distinct.len()
    );
    let lost: Vec<String> = (0..N)
        .map(|i| tagged((i % 3) as i32, i / 3))
        .filter(|r| !distinct.contains(r))
        .take(5)
        .map(|r| String::from_utf8_lossy(&r).into_owned())
        .collect();
    assert!(lost.is_empty(), "records lost, e.g. {lost:?}");
    assert_eq!(distinct.len(), N);
    // Order per partition among first arrivals (a redelivered record repeats an older one).
    let mut first_seen = HashSet::new();
    let firsts: Vec<(i32, u64)> = received
        .iter()
        .filter(|r| first_seen.insert((*r).clone()))
        .map(|r| untag(r))
        .collect();
    assert_eq!(order_violation(&firsts), None, "order per partition");
}

#[tokio::test]
async fn discovery_lists_a_topic_the_test_created_and_no_internal_topic() {
    let topic = unique_name("kps-kafka-discover");
    create_topic(&topic, 2).await;
    let mut connector = TestConnector::start(KafkaConnector).await;
    connector
        .set_config(json!({"discovery_brokers": brokers()}))
        .await
        .expect("config accepted");
    let streams = connector.streams().await;
    let found = streams
        .iter()
        .find(|s| s.id == topic)
        .unwrap_or_else(|| panic!("{topic} not discovered among {} streams", streams.len()));
    assert!(found.discovered && !found.subscribed);
    assert_eq!(found.direction, proto::StreamDirection::Ingress as i32);
    let metadata = struct_to_json(found.metadata.as_ref());
    assert_eq!(
        Value::Object(metadata),
        json!({"brokers": brokers(), "topic": topic})
    );
    assert!(
        streams.iter().all(|s| !s.id.starts_with("__")),
        "internal topics are left out"
    );
    assert!(
        connector
            .set_config(json!({"discovery_brokers": 9092}))
            .await
            .is_err(),
        "a bad discovery_brokers is refused"
    );
    connector.shutdown().await;
}

#[tokio::test]
async fn refused_records_are_dead_lettered_and_the_rest_written_in_order() {
    let topic = unique_name("kps-kafka-reject");
    create_topic(&topic, 1).await;
    let mut connector = TestConnector::start(KafkaConnector).await;
    let channel = unique_name("kps.kafka.reject");
    let dead_letters = format!("{channel}.dead");
    connector
        .set_config(json!({"dead_letter_subject": dead_letters}))
        .await
        .expect("config accepted");
    connector
        .apply(vec![StreamDecl::egress(
            "out",
            channel.as_str(),
            json!({
                "brokers": brokers(),
                "topic": topic,
                "key": "/id",
                // The smallest librdkafka allows: a record above it is refused as too large.
                "properties": {"message.max.bytes": 1000},
            }),
        )])
        .await
        .expect("stream accepted");
    connector
        .wait_for_state("out", State::Healthy, TIMEOUT)
        .await;
    let probe = NatsProbe::connect().await;
    let mut dlq = probe.subscribe(&dead_letters).await;
    let too_large = Bytes::from(format!(r#"{{"id":"b","pad":"{}"}}"#, "x".repeat(5_000)));
    let records = vec![
        Bytes::from(r#"{"id":"a","n":1}"#),
        Bytes::from("not json"),
        too_large.clone(),
        Bytes::from(r#"{"id":"c","n":2}"#),
    ];
    probe.publish_records(&channel, &records, 4).await;

    let reader = TopicReader::new(&topic, 1);
    let written = reader.read(2, TIMEOUT).await;
    let values: Vec<&Bytes> = written.iter().map(|m| &m.value).collect();
    assert_eq!(values, [&records[0], &records[3]]);
    assert_eq!(written[0].key.as_deref(), Some(&b"a"[..]));
    assert_eq!(written[1].key.as_deref(), Some(&b"c"[..]));
    let dead = dlq.collect(2, TIMEOUT).await;
    assert_eq!(dead, vec![Bytes::from("not json"), too_large]);
    let events = connector.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.id == "record-rejected" && e.stream_id == "out"),
        "{events:#?}"
    );
    assert!(reader.read(1, Duration::from_millis(500)).await.is_empty());
    connector.shutdown().await;
}

#[tokio::test]
async fn the_json_envelope_carries_key_value_headers_partition_offset_and_timestamp() {
    let topic = unique_name("kps-kafka-envelope");
    create_topic(&topic, 2).await;
    let producer = producer();
    let headers = OwnedHeaders::new().insert(Header {
        key: "trace",
        value: Some("t-1"),
    });
    producer
        .send(
            FutureRecord::to(&topic)
                .partition(1)
                .key("k-1")
                .payload(r#"{"temp":21}"#)
                .headers(headers)
                .timestamp(1_700_000_000_000),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");

    let mut connector = TestConnector::start(KafkaConnector).await;
    let channel = unique_name("kps.kafka.envelope");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "env",
            channel.as_str(),
            json!({"brokers": brokers(), "topic": topic, "start": "earliest", "envelope": "json", "group_id": unique_name("kps-envelope-group")}),
        )])
        .await
        .expect("stream accepted");
    let got = arrivals.collect(1, TIMEOUT).await;
    connector.shutdown().await;
    assert_eq!(got.len(), 1);
    let envelope: Value = serde_json::from_slice(&got[0]).expect("a JSON envelope");
    assert_eq!(
        envelope,
        json!({
            "key": "k-1",
            "value": "{\"temp\":21}",
            "headers": [{"key": "trace", "value": "t-1"}],
            "partition": 1,
            "offset": 0,
            "timestamp": 1_700_000_000_000_i64,
        })
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported_unhealthy_not_refused() {
    let mut connector = TestConnector::start(KafkaConnector).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    connector
        .apply(vec![StreamDecl::ingress(
            "nowhere",
            unique_name("kps.kafka.nowhere"),
            json!({"brokers": format!("127.0.0.1:{port}"), "topic": "t"}),
        )])
        .await
        .expect("an unreachable cluster is not a request error");
    connector
        .wait_for_state("nowhere", State::Unhealthy, TIMEOUT)
        .await;
    let events = connector.events().await;
    let status = events
        .iter()
        .find(|e| e.kind == "status" && e.stream_id == "nowhere")
        .expect("a status");
    assert!(
        status.message.contains("cannot reach the kafka brokers"),
        "{status:#?}"
    );
    connector.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_the_field_before_anything_runs() {
    let mut connector = TestConnector::start(KafkaConnector).await;
    let b = brokers();
    let cases = [
        (json!({"brokers": b}), "topic"),
        (json!({"brokers": b, "topic": "t", "key": "device"}), "key"),
        (
            json!({"brokers": b, "topic": "t", "group_id": "g"}),
            "group_id",
        ),
        (
            json!({"brokers": b, "topic": "t", "properties": {"enable.idempotence": false}}),
            "properties",
        ),
        (
            json!({"brokers": b, "topic": "t", "properties": {"linger.ms": "soon"}}),
            "properties",
        ),
        (
            json!({"brokers": b, "topic": "t", "password_env": "A", "password_file": "/b"}),
            "password_file",
        ),
    ];
    for (metadata, field) in cases {
        let refused = connector
            .apply(vec![StreamDecl::egress(
                "bad",
                unique_name("kps.kafka.bad"),
                metadata.clone(),
            )])
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{metadata}");
        assert!(
            refused.message().contains(field),
            "{metadata}: `{}` does not name {field}",
            refused.message()
        );
    }
    assert!(connector.streams().await.iter().all(|s| !s.subscribed));
    connector.shutdown().await;
}
