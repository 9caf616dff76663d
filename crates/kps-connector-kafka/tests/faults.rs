//! A cut connection to the Kafka cluster: a private tansu broker (the one `cargo xtask services
//! up` built) advertises the testkit's fault proxy as its address, so every connection of the
//! connector goes through the proxy. Cutting it turns both streams UNHEALTHY; once it is
//! restored they turn HEALTHY, and every record produced or published arrives (duplicates
//! counted).

#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::{PrivateBroker, TopicReader, create_topic_on, free_port, produce, producer_for};
use kps_connector_core::testkit::{
    DeliveryReport, FaultProxy, NatsProbe, StreamDecl, TestConnector, collect_until_complete,
    unique_name,
};
use kps_connector_core::{Bytes, State};
use kps_connector_kafka::KafkaConnector;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

fn records(prefix: &str, range: std::ops::Range<usize>) -> Vec<Bytes> {
    range
        .map(|i| Bytes::from(format!("{prefix}-{i:06}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_broker_connection_recovers_both_ways_without_loss() {
    let listen = free_port();
    let proxy = FaultProxy::start(listen).await;
    let _broker = PrivateBroker::start(listen, proxy.addr()).await;
    let brokers = proxy.addr().to_string();
    let (topic_in, topic_out) = (unique_name("kps-cut-in"), unique_name("kps-cut-out"));
    create_topic_on(&brokers, &topic_in, 1).await;
    create_topic_on(&brokers, &topic_out, 1).await;
    let kafka = producer_for(&brokers);
    let written = TopicReader::on(&brokers, &topic_out, 1);

    let probe = NatsProbe::connect().await;
    let (ch_in, ch_out) = (
        unique_name("kps.kafka.cut.in"),
        unique_name("kps.kafka.cut.out"),
    );
    let mut arrivals = probe.subscribe(&ch_in).await;
    let mut connector = TestConnector::start(KafkaConnector).await;
    // Short timeouts so librdkafka gives up on the cut connection within seconds.
    let properties = json!({"socket.timeout.ms": 3000, "session.timeout.ms": 6000,
                            "heartbeat.interval.ms": 1000});
    connector
        .apply(vec![
            StreamDecl::ingress(
                "cut-in",
                ch_in.as_str(),
                json!({"brokers": brokers, "topic": topic_in, "start": "earliest",
                       "properties": properties}),
            ),
            StreamDecl::egress(
                "cut-out",
                ch_out.as_str(),
                json!({"brokers": brokers, "topic": topic_out,
                       "properties": {"socket.timeout.ms": 3000}}),
            ),
        ])
        .await
        .expect("streams accepted");
    for id in ["cut-in", "cut-out"] {
        connector.wait_for_state(id, State::Healthy, TIMEOUT).await;
    }
    let in_sent = records("in", 0..900);
    let out_sent = records("out", 0..900);
    let keyless = |r: &[Bytes]| -> Vec<(Option<i32>, Option<&str>, Bytes)> {
        r.iter().map(|b| (Some(0), None, b.clone())).collect()
    };

    // Before the cut.
    produce(&kafka, &topic_in, &keyless(&in_sent[..300])).await;
    probe.publish_records(&ch_out, &out_sent[..300], 50).await;
    let mut in_received = arrivals.collect(300, TIMEOUT).await;
    let mut out_received: Vec<Bytes> = written
        .read(300, TIMEOUT)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();

    // The cut: records published on NATS meanwhile wait in the egress stream.
    proxy.cut();
    probe
        .publish_records(&ch_out, &out_sent[300..600], 50)
        .await;
    for id in ["cut-in", "cut-out"] {
        connector
            .wait_for_state(id, State::Unhealthy, TIMEOUT)
            .await;
    }

    // Restored: both recover (the consumer's alert, and with it the status, clears when records
    // flow again); nothing is lost.
    proxy.restore();
    produce(&kafka, &topic_in, &keyless(&in_sent[300..])).await;
    probe.publish_records(&ch_out, &out_sent[600..], 50).await;
    for id in ["cut-in", "cut-out"] {
        connector.wait_for_state(id, State::Healthy, TIMEOUT).await;
    }
    in_received.extend(
        collect_until_complete(&in_sent, &in_received, TIMEOUT, async || {
            arrivals.collect(300, Duration::from_millis(500)).await
        })
        .await,
    );
    out_received.extend(
        collect_until_complete(&out_sent, &out_received, TIMEOUT, async || {
            written
                .read(300, Duration::from_millis(500))
                .await
                .into_iter()
                .map(|r| r.value)
                .collect()
        })
        .await,
    );
    let ingress = DeliveryReport::compare(&in_sent, &in_received);
    let egress = DeliveryReport::compare(&out_sent, &out_received);
    println!("ingress across the cut: {ingress}\negress across the cut: {egress}");
    connector.shutdown().await;
    ingress.assert_none_lost();
    egress.assert_none_lost();
}
