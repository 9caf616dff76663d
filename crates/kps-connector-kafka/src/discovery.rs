//! Discovery: the topics of the clusters the streams use (and the `discovery_brokers` config
//! key), internal topics (`__consumer_offsets`, names starting with `__`) left out, each as an
//! ingress stream whose metadata would subscribe it.

use std::collections::BTreeSet;

use kps_connector_core::{
    ConnectorError, ConnectorResult, Direction, DiscoveredStream, DiscoveryContext,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Map, Value, json};

use crate::client;
use crate::params::KafkaParams;

/// The dynamic config key naming a cluster to list topics from, besides the streams' clusters.
pub const DISCOVERY_BROKERS_KEY: &str = "discovery_brokers";

/// How long one cluster may take to answer (the core gives discovery 5 seconds in all).
const DISCOVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Lists the topics of every known cluster. Fails only when no cluster answered.
pub(crate) async fn discover(
    ctx: DiscoveryContext<KafkaParams>,
) -> ConnectorResult<Vec<DiscoveredStream>> {
    // One params per distinct cluster: the first stream naming it lends its client settings.
    let mut clusters: Vec<KafkaParams> = Vec::new();
    if let Some(brokers) = ctx
        .config
        .get(DISCOVERY_BROKERS_KEY)
        .and_then(Value::as_str)
    {
        clusters.push(KafkaParams::for_brokers(brokers));
    }
    for (_, params) in &ctx.streams {
        if !clusters.iter().any(|c| c.brokers == params.brokers) {
            clusters.push(params.as_ref().clone());
        }
    }
    let mut found = BTreeSet::new();
    let mut errors = Vec::new();
    for cluster in &clusters {
        match topics(cluster).await {
            Ok(topics) => found.extend(topics.into_iter().map(|t| (t, cluster.brokers.clone()))),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if found.is_empty() && !errors.is_empty() {
        return Err(ConnectorError::retryable(errors.join("; ")));
    }
    Ok(found
        .into_iter()
        .map(|(topic, brokers)| DiscoveredStream {
            id: topic.clone(),
            direction: Direction::Ingress,
            transport_channel: String::new(),
            metadata: metadata(&brokers, &topic),
        })
        .collect())
}

fn metadata(brokers: &str, topic: &str) -> Map<String, Value> {
    match json!({"brokers": brokers, "topic": topic}) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The non-internal topics of one cluster.
async fn topics(cluster: &KafkaParams) -> ConnectorResult<Vec<String>> {
    let config = client::base_config(cluster, "kps-discovery").await?;
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| client::classify("cannot create a kafka client", &e))?;
    let brokers = cluster.brokers.clone();
    client::blocking(move || {
        let result = consumer.fetch_metadata(None, DISCOVERY_TIMEOUT);
        drop(consumer);
        result
    })
    .await?
    .map(|metadata| {
        metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
            .map(|t| t.name().to_owned())
            .collect()
    })
    .map_err(|e| ConnectorError::retryable(format!("listing the topics of {brokers}: {e}")))
}
