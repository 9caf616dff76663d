//! Test helpers: the shared Mosquitto on 127.0.0.1:1883, private `mosquitto` instances a test
//! can stop and restart, and a plain rumqttc client that publishes and collects.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kps_connector_core::State;
use kps_connector_core::testkit::{self, EventView, TestConnector};
use kps_connector_mqtt::MqttConnector;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS};
use tokio::sync::mpsc;

/// The shared broker's address.
pub const SHARED_PORT: u16 = 1883;

/// `mqtt://127.0.0.1:1883`, after checking that the broker answers.
pub async fn shared_broker() -> String {
    reachable(SHARED_PORT).await;
    format!("mqtt://127.0.0.1:{SHARED_PORT}")
}

async fn reachable(port: u16) {
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => testkit::service_unavailable(&format!("Mosquitto at 127.0.0.1:{port}"), e),
        Err(_) => {
            testkit::service_unavailable(&format!("Mosquitto at 127.0.0.1:{port}"), "timed out")
        }
    }
}

/// A unique topic under `kps-test/`.
pub fn unique_topic(prefix: &str) -> String {
    format!("kps-test/{}", testkit::unique_name(prefix))
}

/// `record-000042`-style records.
pub fn records(prefix: &str, range: std::ops::Range<usize>) -> Vec<Bytes> {
    range
        .map(|i| Bytes::from(format!("{prefix}-{i:06}")))
        .collect()
}

pub fn qos_of(value: u8) -> QoS {
    match value {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Publishes `records` to `topic` on the broker at `port` and waits until the broker confirmed
/// every one (qos 0: until written).
pub async fn publish(port: u16, topic: &str, records: &[Bytes], qos: u8, retain: bool) {
    reachable(port).await;
    let mut options = MqttOptions::new(testkit::unique_name("pub"), "127.0.0.1", port);
    // Mosquitto drops qos 2 publishes beyond its max_inflight_messages (20) silently.
    options
        .set_inflight(if qos == 2 { 20 } else { 100 })
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 200);
    let total = records.len();
    let driver = tokio::spawn(async move {
        let mut confirmed = 0;
        while confirmed < total {
            match eventloop.poll().await.expect("test publisher connection") {
                Event::Outgoing(Outgoing::Publish(0)) => confirmed += 1,
                Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)) => confirmed += 1,
                _ => {}
            }
        }
        eventloop
    });
    for record in records {
        client
            .publish_bytes(topic.to_owned(), qos_of(qos), retain, record.clone())
            .await
            .expect("publish queued");
    }
    let mut eventloop = tokio::time::timeout(Duration::from_secs(120), driver)
        .await
        .expect("the broker confirmed every publish in time")
        .expect("publisher task");
    client.disconnect().await.expect("disconnect queued");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(event) = eventloop.poll().await {
            if event == Event::Outgoing(Outgoing::Disconnect) {
                break;
            }
        }
    })
    .await;
}

/// A plain MQTT subscriber (auto acks).
pub struct Subscriber {
    received: mpsc::UnboundedReceiver<Publish>,
    client: AsyncClient,
}

impl Subscriber {
    /// Subscribes to `filter` and waits for the SUBACK.
    pub async fn start(port: u16, filter: &str, qos: u8) -> Self {
        Self::start_session(port, filter, qos, &testkit::unique_name("sub"), true).await
    }

    /// Subscribes with client id `id` and the given clean-session flag.
    pub async fn start_session(port: u16, filter: &str, qos: u8, id: &str, clean: bool) -> Self {
        reachable(port).await;
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_clean_session(clean);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client
            .subscribe(filter, qos_of(qos))
            .await
            .expect("subscribe queued");
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        let Ok(()) = tx.send(p) else { return };
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("SUBACK in time")
            .expect("subscriber task");
        Self {
            received: rx,
            client,
        }
    }

    /// Collects `n` messages, or what came within `timeout`.
    pub async fn collect(&mut self, n: usize, timeout: Duration) -> Vec<Publish> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.received.recv()).await {
                Ok(Some(p)) => out.push(p),
                _ => break,
            }
        }
        out
    }

    /// Messages that arrive within `quiet` of each other.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Publish> {
        let mut out = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout(quiet, self.received.recv()).await {
            out.push(p);
        }
        out
    }

    pub async fn stop(self) {
        let _ = self.client.disconnect().await;
    }
}

/// The payloads of received messages.
pub fn payloads(messages: &[Publish]) -> Vec<Bytes> {
    messages.iter().map(|p| p.payload.clone()).collect()
}

/// A `mosquitto` of this test alone, on a free port, with its own config and data directory.
pub struct PrivateBroker {
    pub port: u16,
    /// The ports of the extra listeners, in the order given.
    pub extra_ports: Vec<u16>,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    pub const BINARY: &'static str = "/usr/sbin/mosquitto";

    /// Starts a broker; `extra` is appended to its config (listeners come first).
    pub async fn start(extra: &str) -> Self {
        Self::start_with_listeners(&[], extra).await
    }

    /// Starts a broker with a plain listener plus the `extra_listeners` config blocks (each
    /// given its own free port, substituted for `{port}`, listed in `extra_ports`).
    pub async fn start_with_listeners(extra_listeners: &[&str], extra: &str) -> Self {
        if !std::path::Path::new(Self::BINARY).exists() {
            testkit::service_unavailable(
                "the mosquitto binary",
                format!("{} is missing", Self::BINARY),
            );
        }
        let dir = tempfile::tempdir().expect("broker directory");
        let port = free_port();
        let mut config = format!(
            "user root\nper_listener_settings false\nallow_anonymous true\npersistence true\npersistence_location {}/\nlog_dest file {}/mosquitto.log\nlistener {port} 127.0.0.1\n",
            dir.path().display(),
            dir.path().display()
        );
        let mut extra_ports = Vec::new();
        for listener in extra_listeners {
            let extra_port = free_port();
            extra_ports.push(extra_port);
            config.push_str(&listener.replace("{port}", &extra_port.to_string()));
            config.push('\n');
        }
        config.push_str(extra);
        config.push('\n');
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, config).expect("broker config written");
        let mut broker = Self {
            port,
            extra_ports,
            dir,
            config: path,
            child: None,
        };
        broker.start_again().await;
        broker
    }

    /// The broker URL, `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the broker process (again) and waits until it accepts connections.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = Command::new(Self::BINARY)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("mosquitto exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen in time: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the broker like a service manager does (SIGTERM: it saves its sessions and exits).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts the MQTT connector in-process.
pub async fn connector() -> TestConnector<MqttConnector> {
    TestConnector::start(MqttConnector).await
}

/// Waits until `check` holds for the events, panicking with them after `timeout`.
pub async fn wait_for_events(
    running: &mut TestConnector<MqttConnector>,
    timeout: Duration,
    what: &str,
    check: impl Fn(&[EventView]) -> bool,
) -> Vec<EventView> {
    let deadline = Instant::now() + timeout;
    loop {
        let events = running.events().await;
        if check(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}; events: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stream's current status event.
pub fn status_of<'a>(events: &'a [EventView], stream: &str) -> Option<&'a EventView> {
    events
        .iter()
        .find(|e| e.kind == "status" && e.stream_id == stream)
}

/// Whether the stream's status is `state`.
pub fn is_state(events: &[EventView], stream: &str, state: State) -> bool {
    status_of(events, stream).is_some_and(|e| e.state == state)
}

/// Waits until the stream's status is `state` and began after `since` (so a status left from
/// before a restart does not count).
pub async fn wait_for_state_since(
    running: &mut TestConnector<MqttConnector>,
    stream: &str,
    state: State,
    since: std::time::SystemTime,
    timeout: Duration,
) {
    wait_for_events(running, timeout, &format!("{stream} {state:?}"), |events| {
        status_of(events, stream)
            .is_some_and(|e| e.state == state && e.created_at.is_some_and(|t| t >= since))
    })
    .await;
}

/// Asserts that `got` equals `sent`, reporting counts and the first difference (not thousands
/// of records).
pub fn assert_same(got: &[Bytes], sent: &[Bytes], what: &str) {
    if got == sent {
        return;
    }
    let first = got.iter().zip(sent).position(|(g, s)| g != s);
    panic!(
        "{what}: got {} records, expected {}; first difference at {:?} (got {:?}, expected {:?}); last got {:?}",
        got.len(),
        sent.len(),
        first,
        first.and_then(|i| got.get(i)),
        first.and_then(|i| sent.get(i)),
        got.last(),
    );
}

/// Removes the persistent sessions the connector's ingress streams left on the shared broker
/// (connects with their client ids and a clean session), so test runs do not pile them up.
pub async fn forget_sessions(connector_id: &str, streams: &[&str]) {
    for stream in streams {
        let id = kps_connector_mqtt::client::default_client_id(connector_id, stream);
        let mut options = MqttOptions::new(id, "127.0.0.1", SHARED_PORT);
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Packet::ConnAck(_)) => {
                        let _ = client.disconnect().await;
                    }
                    Event::Outgoing(Outgoing::Disconnect) => break,
                    _ => {}
                }
            }
        })
        .await;
    }
}
