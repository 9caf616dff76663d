//! The demo behind `cargo xtask demo`: the platform's job on one machine, with the MQTT connector.
//!
//! It starts the MQTT connector binary, declares two streams with kpsctl's library (sensor
//! readings from MQTT into NATS with the JSON envelope, and from that NATS channel back out to
//! another MQTT topic), publishes sample sensor readings to MQTT, and shows them arriving on
//! NATS and going back out to MQTT with a live rate, until Ctrl-C or `--duration`. It stops
//! everything it started and exits 0 only when records were seen both ways.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use kps_connector_cli::Connection;
use kps_connector_core::testkit::StreamDecl;
use kps_connector_core::transport::wire;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// The MQTT connector binary.
    #[arg(long, default_value = "target/debug/kps-connector-mqtt")]
    connector_bin: PathBuf,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Sensor readings published per second.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// The MQTT broker.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// The NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The connector's gRPC port.
    #[arg(long, default_value_t = 18000)]
    grpc_port: u16,
    /// Where the connector's log goes.
    #[arg(long, default_value = "target/demo/connector.log")]
    log: PathBuf,
    /// The connector's state directory.
    #[arg(long, default_value = "target/demo/state")]
    state_dir: PathBuf,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("demo: records did not flow both ways");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let run_id = std::process::id();
    let sensors_topic = format!("kps-demo/{run_id}/sensors");
    let processed_topic = format!("kps-demo/{run_id}/processed");
    let channel = format!("demo.{run_id}.sensors");
    let (mqtt_host, mqtt_port) = args.mqtt.rsplit_once(':').ok_or("--mqtt is host:port")?;
    let mqtt_port: u16 = mqtt_port.parse().map_err(|_| "--mqtt port is a number")?;

    // 1. The connector, as the platform would run it.
    if let Some(dir) = args.log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let log = std::fs::File::create(&args.log)
        .map_err(|e| format!("create {}: {e}", args.log.display()))?;
    let grpc = format!("127.0.0.1:{}", args.grpc_port);
    let connector_id = format!("demo-{run_id}");
    let mut connector = tokio::process::Command::new(&args.connector_bin)
        .args(["--connector-id", &connector_id, "--listen", &grpc])
        .args([
            "--metrics-listen",
            &format!("127.0.0.1:{}", args.grpc_port + 1),
            "--nats-url",
            &args.nats_url,
        ])
        .arg("--state-dir")
        .arg(&args.state_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "start {}: {e} (build it with `cargo build -p kps-connector-mqtt`)",
                args.connector_bin.display()
            )
        })?;
    println!(
        "started {} as {connector_id} (gRPC {grpc}, log {})",
        args.connector_bin.display(),
        args.log.display()
    );
    let result = drive(
        &args,
        &grpc,
        &connector_id,
        mqtt_host,
        mqtt_port,
        &sensors_topic,
        &processed_topic,
        &channel,
    )
    .await;

    // Stop what we started: SIGTERM, so the connector drains, then wait.
    if let Some(pid) = connector.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    match tokio::time::timeout(Duration::from_secs(15), connector.wait()).await {
        Ok(Ok(status)) => println!("connector stopped ({status})"),
        _ => {
            let _ = connector.kill().await;
            println!("connector killed after 15s");
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &Args,
    grpc: &str,
    connector_id: &str,
    mqtt_host: &str,
    mqtt_port: u16,
    sensors_topic: &str,
    processed_topic: &str,
    channel: &str,
) -> Result<bool, String> {
    // 2. Declare the streams, as the platform does, with kpsctl's library.
    let mut connection = connect_with_retry(grpc, connector_id).await?;
    let mqtt_url = format!("mqtt://{mqtt_host}:{mqtt_port}");
    let streams = vec![
        StreamDecl::ingress(
            "sensors-in",
            channel,
            json!({"url": mqtt_url, "topic": format!("{sensors_topic}/+"), "qos": 1, "envelope": "json"}),
        ),
        StreamDecl::egress(
            "processed-out",
            channel,
            json!({"url": mqtt_url, "topic": processed_topic, "qos": 1}),
        ),
    ];
    connection
        .apply(&streams)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "applied streams: sensors-in (MQTT {sensors_topic}/+ -> NATS {channel}), processed-out (NATS {channel} -> MQTT {processed_topic})"
    );

    // 3. Watch NATS and the processed MQTT topic.
    let on_nats = Arc::new(AtomicU64::new(0));
    let on_mqtt = Arc::new(AtomicU64::new(0));
    let nats = async_nats::connect(args.nats_url.as_str())
        .await
        .map_err(|e| format!("NATS: {e}"))?;
    let mut subscriber = nats
        .subscribe(channel.to_owned())
        .await
        .map_err(|e| format!("NATS: {e}"))?;
    let counter = on_nats.clone();
    let first_nats = Arc::new(std::sync::Mutex::new(None::<String>));
    let first = first_nats.clone();
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            if let Ok((_, records)) = wire::decode(message.payload) {
                if let (Some(r), Ok(mut first)) = (records.first(), first.lock()) {
                    first.get_or_insert_with(|| String::from_utf8_lossy(r).into_owned());
                }
                counter.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
        }
    });
    let mut options = MqttOptions::new(
        format!("kps-demo-watch-{}", std::process::id()),
        mqtt_host,
        mqtt_port,
    );
    options.set_keep_alive(Duration::from_secs(10));
    let (watcher, mut watch_loop) = AsyncClient::new(options, 100);
    watcher
        .subscribe(processed_topic, QoS::AtMostOnce)
        .await
        .map_err(|e| format!("MQTT: {e}"))?;
    let counter = on_mqtt.clone();
    tokio::spawn(async move {
        loop {
            match watch_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });

    // 4. Publish sensor readings to MQTT.
    let mut options = MqttOptions::new(
        format!("kps-demo-sensors-{}", std::process::id()),
        mqtt_host,
        mqtt_port,
    );
    options.set_keep_alive(Duration::from_secs(10));
    let (publisher, mut publish_loop) = AsyncClient::new(options, 1000);
    tokio::spawn(async move {
        loop {
            if publish_loop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let published = Arc::new(AtomicU64::new(0));
    let sensors = sensors_topic.to_owned();
    let count = published.clone();
    let rate = args.rate.max(1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        for i in 0u64.. {
            tick.tick().await;
            let device = format!("device-{}", i % 4);
            let reading = json!({"device": device, "seq": i, "temperature_c": 20.0 + (i % 50) as f64 / 10.0, "humidity": 40 + i % 20});
            if publisher
                .publish(
                    format!("{sensors}/{device}"),
                    QoS::AtLeastOnce,
                    false,
                    reading.to_string(),
                )
                .await
                .is_ok()
            {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    // 5. Show the flow until Ctrl-C or --duration.
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs(d));
    let (mut last_nats, mut last_mqtt) = (0, 0);
    let mut shown_first = false;
    println!("publishing {rate} sensor readings/s to MQTT; Ctrl-C to stop");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let (n, m) = (
            on_nats.load(Ordering::Relaxed),
            on_mqtt.load(Ordering::Relaxed),
        );
        if !shown_first
            && let Ok(first) = first_nats.lock()
            && let Some(record) = first.as_ref()
        {
            println!("first record on NATS {channel}: {record}");
            shown_first = true;
        }
        let health = stream_health(&mut connection).await;
        println!(
            "[{:>3}s] published {:>6} | MQTT->NATS {:>5}/s (total {n:>6}) | NATS->MQTT {:>5}/s (total {m:>6}) | {health}",
            started.elapsed().as_secs(),
            published.load(Ordering::Relaxed),
            n - last_nats,
            m - last_mqtt,
        );
        (last_nats, last_mqtt) = (n, m);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let _ = connection.set_streams(Vec::new()).await;
    let (n, m) = (
        on_nats.load(Ordering::Relaxed),
        on_mqtt.load(Ordering::Relaxed),
    );
    println!(
        "done: {} published, {n} seen on NATS, {m} seen back on MQTT",
        published.load(Ordering::Relaxed)
    );
    Ok(n > 0 && m > 0)
}

async fn connect_with_retry(grpc: &str, connector_id: &str) -> Result<Connection, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Connection::connect(grpc, Some(connector_id)).await {
            Ok(connection) => return Ok(connection),
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn stream_health(connection: &mut Connection) -> String {
    let Ok(events) = connection.events().await else {
        return "connector unreachable".to_owned();
    };
    let mut states: Vec<String> = events
        .into_iter()
        .filter_map(|e| match e.object {
            Some(kps_connector_core::proto::event_payload::Object::Status(s)) => Some(format!(
                "{} {}",
                s.stream_id,
                kps_connector_core::proto::State::try_from(s.state)
                    .map(|s| s.as_str_name().trim_start_matches("STATE_").to_owned())
                    .unwrap_or_default()
            )),
            _ => None,
        })
        .collect();
    states.sort();
    states.join(", ")
}
