//! What the Kafka tests share: the broker's address, topics, a plain rdkafka producer and
//! reader to write into and read back from the real broker, and a private tansu broker for the
//! tests that put the testkit's fault proxy in front of it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kps_connector_core::Bytes;
use kps_connector_core::testkit::{TestCertificates, service_unavailable};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// The broker the tests use: `KPS_TEST_KAFKA_BROKERS`, or the one `cargo xtask services up`
/// starts on 127.0.0.1:9092.
pub fn brokers() -> String {
    std::env::var("KPS_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// Panics naming `cargo xtask services up` when nothing answers on the broker's port.
pub fn require_broker() {
    let brokers = brokers();
    let first = brokers.split(',').next().unwrap_or_default().to_owned();
    let reachable = first
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok());
    if !reachable {
        service_unavailable(
            &format!("the Kafka broker at {first}"),
            "connection refused",
        );
    }
}

/// How the tests' own clients reach a cluster: its bootstrap servers and the librdkafka
/// settings they need besides (TLS).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `host:port[,host:port]`.
    pub brokers: String,
    settings: Vec<(&'static str, String)>,
}

impl Cluster {
    /// A cluster reached over TLS trusting the CA of `certs`; with `client_certificate` the
    /// clients also present the client certificate (mutual TLS).
    pub fn tls(brokers: &str, certs: &TestCertificates, client_certificate: bool) -> Self {
        let path = |path: &std::path::Path| path.display().to_string();
        let mut settings = vec![
            ("security.protocol", "ssl".to_owned()),
            ("ssl.ca.location", path(&certs.ca)),
        ];
        if client_certificate {
            settings.push(("ssl.certificate.location", path(&certs.client_cert)));
            settings.push(("ssl.key.location", path(&certs.client_key)));
        }
        Self {
            brokers: brokers.to_owned(),
            settings,
        }
    }
}

impl From<&str> for Cluster {
    fn from(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            settings: Vec::new(),
        }
    }
}

impl From<&String> for Cluster {
    fn from(brokers: &String) -> Self {
        Self::from(brokers.as_str())
    }
}

impl From<&Cluster> for Cluster {
    fn from(cluster: &Cluster) -> Self {
        cluster.clone()
    }
}

fn config(cluster: impl Into<Cluster>) -> ClientConfig {
    let cluster = cluster.into();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &cluster.brokers);
    for (name, value) in &cluster.settings {
        config.set(*name, value);
    }
    config
}

/// Creates `topic` with `partitions` partitions and waits until its metadata shows them.
pub async fn create_topic(topic: &str, partitions: i32) {
    require_broker();
    create_topic_on(&brokers(), topic, partitions).await;
}

/// [`create_topic`] on `cluster` (its bootstrap servers, or a [`Cluster`]).
pub async fn create_topic_on(cluster: impl Into<Cluster>, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(cluster).create().expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("CreateTopics answered");
    for result in results {
        result.expect("topic created");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .expect("metadata");
        let ready = metadata
            .topics()
            .first()
            .is_some_and(|t| t.error().is_none() && t.partitions().len() == partitions as usize);
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} never showed {partitions} partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An idempotent producer for writing test records.
pub fn producer() -> FutureProducer {
    require_broker();
    producer_for(&brokers())
}

/// [`producer`] for `cluster` (its bootstrap servers, or a [`Cluster`]).
pub fn producer_for(cluster: impl Into<Cluster>) -> FutureProducer {
    config(cluster)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Writes `records` (partition, key, value) in order and waits for every delivery.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: &[(Option<i32>, Option<&str>, Bytes)],
) {
    let mut deliveries = Vec::with_capacity(records.len());
    for (partition, key, value) in records {
        let mut record = FutureRecord::<str, [u8]>::to(topic).payload(&value[..]);
        if let Some(partition) = partition {
            record = record.partition(*partition);
        }
        if let Some(key) = key {
            record = record.key(*key);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .expect("delivery report")
            .expect("record delivered");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// A message as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Bytes,
}

/// Reads a topic from its beginning, without a consumer group, keeping its position between
/// calls.
pub struct TopicReader {
    consumer: StreamConsumer,
}

impl TopicReader {
    /// A reader of every partition of `topic` (`partitions` of them) from offset 0.
    pub fn new(topic: &str, partitions: i32) -> Self {
        require_broker();
        Self::on(&brokers(), topic, partitions)
    }

    /// [`TopicReader::new`] on `cluster` (its bootstrap servers, or a [`Cluster`]).
    pub fn on(cluster: impl Into<Cluster>, topic: &str, partitions: i32) -> Self {
        let consumer: StreamConsumer = config(cluster)
            .set("group.id", "kps-test-reader-unused")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition_offset(topic, partition, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&list).expect("assign");
        Self { consumer }
    }

    /// The next `n` messages, or fewer if they do not come within `timeout`.
    pub async fn read(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => out.push(Received {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                }),
                // librdkafka reports connection trouble and reconnects by itself; a reader that
                // never gets its records makes the test fail on the count.
                Ok(Err(e)) => eprintln!("reading the topic: {e}"),
                Err(_) => break,
            }
        }
        out
    }
}

/// Checks that the records of each group (partition or key) arrived in increasing sequence
/// order; returns the first violation.
pub fn order_violation<K: Ord + std::fmt::Debug>(arrivals: &[(K, u64)]) -> Option<String> {
    let mut last: BTreeMap<&K, u64> = BTreeMap::new();
    for (group, seq) in arrivals {
        if let Some(previous) = last.insert(group, *seq)
            && previous > *seq
        {
            return Some(format!("{group:?}: {seq} after {previous}"));
        }
    }
    None
}

/// The tansu binary `cargo xtask services up` built: `KPS_TANSU_BIN`, or the newest under
/// `~/.cache/kps-connectors/tools/tansu-*/bin/tansu`.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KPS_TANSU_BIN") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|cache| cache.join("kps-connectors").join("tools"));
    let mut candidates: Vec<PathBuf> = cache
        .and_then(|tools| std::fs::read_dir(tools).ok())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin").join("tansu"))
        .filter(|path| path.is_file())
        .collect();
    candidates.sort();
    candidates.pop().unwrap_or_else(|| {
        service_unavailable(
            "the tansu broker binary",
            "not built; run `cargo xtask services up`",
        )
    })
}

/// A tansu broker of the test's own, listening on `listen` and advertising `advertised` (the
/// fault proxy in front of it, so that every connection of every client goes through the
/// proxy); killed on drop.
pub struct PrivateBroker {
    child: Child,
    _data: tempfile::TempDir,
}

impl PrivateBroker {
    /// Starts the broker and waits until it listens.
    pub async fn start(listen: SocketAddr, advertised: SocketAddr) -> Self {
        let data = tempfile::tempdir().expect("a data directory");
        let child = Command::new(tansu_binary())
            .args(["broker", "--cluster-id", "kps-private"])
            .args(["--listener-url", &format!("tcp://{listen}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(data.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {listen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, _data: data }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address nothing listens on yet.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}
