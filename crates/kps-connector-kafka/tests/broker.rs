//! The broker itself (tansu on 127.0.0.1:9092, from `cargo xtask services up`) does what the
//! connector relies on: topic listing, several partitions, the idempotent producer, and consumer
//! groups with stored and committed offsets that a new member resumes from.

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{brokers, create_topic, produce, producer};
use kps_connector_core::Bytes;
use kps_connector_core::testkit::unique_name;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn group_member(group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer")
}

/// Reads `n` messages as (partition, offset, value).
async fn read(consumer: &StreamConsumer, n: usize) -> Vec<(i32, i64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages within 30s: {out:?}", out.len()))
            .expect("message");
        out.push((
            message.partition(),
            message.offset(),
            String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
        ));
    }
    out
}

#[tokio::test]
async fn the_broker_lists_topics_keeps_partitions_and_commits_group_offsets() {
    let topic = unique_name("kps-broker-check");
    create_topic(&topic, 3).await;

    // Topic listing (what discovery uses): the topic with its three partitions.
    let lister = group_member("kps-broker-check-lister");
    let metadata = lister
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata of all topics");
    let listed = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("the new topic is listed");
    assert_eq!(listed.partitions().len(), 3);

    // The idempotent producer (InitProducerId, sequence numbers): 10 records per partition.
    let records: Vec<(Option<i32>, Option<&str>, Bytes)> = (0..30)
        .map(|i| {
            (
                Some(i % 3),
                None,
                Bytes::from(format!("p{}-{:02}", i % 3, i / 3)),
            )
        })
        .collect();
    produce(&producer(), &topic, &records).await;

    // A group member reads all 30, in order per partition, stores the offsets after the 5th
    // record of each partition and commits them.
    let group = unique_name("kps-broker-check-group");
    let first = group_member(&group);
    first.subscribe(&[&topic]).expect("subscribe");
    let got = read(&first, 30).await;
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (partition, offset, value) in &got {
        assert_eq!(
            value,
            &format!("p{partition}-{offset:02}"),
            "partition and offset match"
        );
        per_partition.entry(*partition).or_default().push(*offset);
    }
    assert_eq!(per_partition.len(), 3);
    for offsets in per_partition.values() {
        assert_eq!(
            offsets,
            &(0..10).collect::<Vec<i64>>(),
            "order per partition"
        );
    }
    let mut store = TopicPartitionList::new();
    for partition in 0..3 {
        store
            .add_partition_offset(&topic, partition, Offset::Offset(5))
            .expect("offset");
    }
    first.store_offsets(&store).expect("offsets stored");
    // librdkafka ties a list it was handed or returned to the consumer's partitions: a list
    // outliving its consumer keeps the consumer from being destroyed (its drop hangs).
    drop(store);
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("offsets committed");
    let committed = first
        .committed(Duration::from_secs(10))
        .expect("committed offsets fetched");
    for partition in 0..3 {
        assert_eq!(
            committed
                .find_partition(&topic, partition)
                .map(|p| p.offset()),
            Some(Offset::Offset(5)),
            "partition {partition}: {committed:?}"
        );
    }
    drop(committed);
    // Closing a member leaves the group and waits for the broker: off the runtime thread.
    tokio::task::spawn_blocking(move || drop(first))
        .await
        .expect("first member closed");

    // A new member of the same group resumes from the committed offsets.
    let second = group_member(&group);
    second.subscribe(&[&topic]).expect("subscribe");
    let resumed = read(&second, 15).await;
    let mut offsets: Vec<(i32, i64)> = resumed.iter().map(|(p, o, _)| (*p, *o)).collect();
    offsets.sort();
    let expected: Vec<(i32, i64)> = (0..3).flat_map(|p| (5..10).map(move |o| (p, o))).collect();
    assert_eq!(offsets, expected);
}
