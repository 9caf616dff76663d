//! The RTSP connector against a real RTSP server (GStreamer's, `testserver/rtsp_server.py`):
//! what it publishes on NATS decodes with ffprobe to the frames and resolution the server sends.

mod support;

use std::time::Duration;

use kps_connector_core::testkit::{
    NatsProbe, RecordStream, StreamDecl, TestConnector, unique_name,
};
use kps_connector_core::{Bytes, State};
use kps_connector_rtsp::RtspConnector;
use serde_json::{Value, json};
use support::{PrivateServer, ServerSpec};

const H264_CLOCK: f64 = 90_000.0;

/// A connector with one ingress stream `cam` on `metadata`, and a subscription to its channel.
async fn run_stream(metadata: Value) -> (TestConnector<RtspConnector>, RecordStream) {
    let mut connector = TestConnector::start(RtspConnector).await;
    let channel = unique_name("kps.rtsp");
    let probe = NatsProbe::connect().await;
    let records = probe.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress("cam", channel.as_str(), metadata)])
        .await
        .expect("the stream is accepted");
    connector
        .wait_for_state("cam", State::Healthy, Duration::from_secs(20))
        .await;
    (connector, records)
}

/// The next `n` records (a TransportMessage may carry several, so more may have arrived: the
/// rest are dropped).
async fn collect(records: &mut RecordStream, n: usize) -> Vec<Bytes> {
    let mut got = records.collect(n, Duration::from_secs(30)).await;
    assert!(
        got.len() >= n,
        "{} of {n} records published within 30 s",
        got.len()
    );
    got.truncate(n);
    got
}

fn starts_with_sps_pps(record: &[u8]) -> bool {
    let types = support::nal_types(record);
    record.starts_with(&[0, 0, 0, 1]) && types.len() >= 3 && types[0] == 7 && types[1] == 8
}

fn json_records(records: &[Bytes]) -> Vec<Value> {
    records
        .iter()
        .map(|r| serde_json::from_slice(r).expect("a JSON envelope"))
        .collect()
}

/// Published frames per second, from the first to the last record's pts.
fn rate(envelopes: &[Value]) -> f64 {
    let pts: Vec<i64> = envelopes
        .iter()
        .map(|e| e["pts"].as_i64().expect("pts is an integer"))
        .collect();
    let span = (pts[pts.len() - 1] - pts[0]) as f64 / H264_CLOCK;
    (pts.len() - 1) as f64 / span
}

async fn frames_decode(transport: &str) {
    let url = support::require_shared_server().await;
    let (connector, mut records) = run_stream(json!({"url": url, "transport": transport})).await;
    let n = 100;
    let got = collect(&mut records, n).await;
    connector.shutdown().await;

    assert!(
        starts_with_sps_pps(&got[0]),
        "the first record is a keyframe with SPS/PPS in front: {:?}",
        support::nal_types(&got[0])
    );
    let probe = support::ffprobe_records(&got);
    assert_eq!(
        probe.frames, n,
        "one decoded frame per record ({transport})"
    );
    assert_eq!((probe.width, probe.height), support::SHARED_SIZE);
    assert!(probe.errors.is_empty(), "decoder errors: {}", probe.errors);
    let keyframes = got.iter().filter(|r| starts_with_sps_pps(r)).count();
    let expected = n.div_ceil(support::SHARED_GOP as usize);
    assert_eq!(
        keyframes,
        expected,
        "one keyframe every {} frames",
        support::SHARED_GOP
    );
    assert_eq!(
        probe.pict_types.iter().filter(|t| *t == "I").count(),
        expected
    );
}

#[tokio::test]
async fn tcp_frames_decode_to_the_expected_count_and_resolution() {
    frames_decode("tcp").await;
}

#[tokio::test]
async fn udp_frames_decode_to_the_expected_count_and_resolution() {
    frames_decode("udp").await;
}

#[tokio::test]
async fn keyframes_are_idr_frames_each_starting_with_sps_pps() {
    let url = support::require_shared_server().await;
    let (connector, mut records) = run_stream(json!({"url": url, "output": "keyframes"})).await;
    let got = collect(&mut records, 4).await;
    connector.shutdown().await;

    for (i, record) in got.iter().enumerate() {
        let types = support::nal_types(record);
        assert!(starts_with_sps_pps(record), "record {i}: {types:?}");
        assert!(
            types.contains(&5),
            "record {i} holds an IDR slice: {types:?}"
        );
        assert!(
            !types.contains(&1),
            "record {i} holds no non-IDR slice: {types:?}"
        );
        let alone = support::ffprobe_records(std::slice::from_ref(record));
        assert_eq!(alone.frames, 1, "record {i} decodes alone");
        assert_eq!(alone.pict_types, ["I"]);
        assert!(alone.errors.is_empty(), "record {i}: {}", alone.errors);
    }
    let all = support::ffprobe_records(&got);
    assert_eq!(all.frames, 4);
    assert_eq!((all.width, all.height), support::SHARED_SIZE);
}

#[tokio::test]
async fn the_json_envelope_carries_pts_keyframe_codec_size_and_data() {
    use base64::Engine;
    let url = support::require_shared_server().await;
    let (connector, mut records) = run_stream(json!({"url": url, "envelope": "json"})).await;
    let got = collect(&mut records, 30).await;
    connector.shutdown().await;

    let envelopes = json_records(&got);
    let mut frames = Vec::new();
    for (i, e) in envelopes.iter().enumerate() {
        assert_eq!(e["codec"], "h264");
        assert_eq!(e["width"], support::SHARED_SIZE.0);
        assert_eq!(e["height"], support::SHARED_SIZE.1);
        let data = base64::engine::general_purpose::STANDARD
            .decode(e["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            e["keyframe"].as_bool().unwrap(),
            starts_with_sps_pps(&data),
            "envelope {i}"
        );
        frames.push(Bytes::from(data));
    }
    assert_eq!(envelopes[0]["keyframe"], true);
    // Consecutive frames are 1/25 s apart on the 90 kHz clock.
    for pair in envelopes.windows(2) {
        let step = pair[1]["pts"].as_i64().unwrap() - pair[0]["pts"].as_i64().unwrap();
        assert_eq!(step, 90_000 / i64::from(support::SHARED_FPS));
    }
    let probe = support::ffprobe_records(&frames);
    assert_eq!(probe.frames, 30);
}

#[tokio::test]
async fn max_fps_is_respected_within_one_frame_per_second() {
    // 25 fps with a keyframe every 5 frames: 5 keyframes a second to sample from.
    let server = PrivateServer::start(ServerSpec {
        gop: 5,
        ..ServerSpec::default()
    })
    .await;
    for (output, cap) in [("keyframes", 2.0), ("keyframes", 4.0), ("frames", 2.0)] {
        let (connector, mut records) = run_stream(json!({
            "url": server.url(), "output": output, "max_fps": cap, "envelope": "json"
        }))
        .await;
        let got = collect(&mut records, 12).await;
        connector.shutdown().await;
        let envelopes = json_records(&got);
        let measured = rate(&envelopes);
        assert!(
            (measured - cap).abs() <= 1.0,
            "output {output}, max_fps {cap}: {measured:.2} frames/s"
        );
        assert!(
            envelopes.iter().all(|e| e["keyframe"] == true),
            "output {output}, max_fps {cap}: below the camera's rate only keyframes stay decodable"
        );
    }

    // A cap above the camera's rate passes every frame.
    let (connector, mut records) =
        run_stream(json!({"url": server.url(), "max_fps": 30, "envelope": "json"})).await;
    let got = collect(&mut records, 50).await;
    connector.shutdown().await;
    let measured = rate(&json_records(&got));
    assert!((measured - 25.0).abs() <= 1.0, "{measured:.2} frames/s");
}

#[tokio::test]
async fn a_server_restart_recovers_unhealthy_then_healthy() {
    let mut server = PrivateServer::start(ServerSpec::default()).await;
    let (mut connector, mut records) = run_stream(json!({"url": server.url()})).await;
    let before = collect(&mut records, 30).await;
    assert!(starts_with_sps_pps(&before[0]));

    server.stop();
    connector
        .wait_for_state("cam", State::Unhealthy, Duration::from_secs(20))
        .await;
    let events = connector.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.kind == "alert" && e.stream_id == "cam" && e.state == State::Unhealthy),
        "a connection alert is raised: {events:#?}"
    );
    records.drain(Duration::from_millis(500)).await;

    server.start_again().await;
    connector
        .wait_for_state("cam", State::Healthy, Duration::from_secs(60))
        .await;
    let after = collect(&mut records, 30).await;
    assert!(
        starts_with_sps_pps(&after[0]),
        "after the reconnect the records start at a keyframe again"
    );
    let probe = support::ffprobe_records(&after);
    assert_eq!(probe.frames, 30);
    assert!(probe.errors.is_empty(), "{}", probe.errors);

    let metrics = connector.metrics_text().await;
    for name in ["rtsp_frames_received", "rtsp_keyframes_received"] {
        assert!(
            metrics.contains(&format!(r#"name="{name}"}}"#)),
            "{name} is counted: {metrics}"
        );
    }
    assert!(
        metrics.contains(r#"kps_stream_restarts_total{stream="cam",direction="ingress"} "#),
        "{metrics}"
    );
    connector.shutdown().await;
}

#[tokio::test]
async fn credentials_come_from_a_password_file() {
    let server = PrivateServer::start(ServerSpec {
        auth: Some(("viewer", "s3cret")),
        ..ServerSpec::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&good, "s3cret\n").unwrap();
    std::fs::write(&bad, "wrong\n").unwrap();

    let (connector, mut records) = run_stream(json!({
        "url": server.url(), "username": "viewer", "password_file": good.display().to_string()
    }))
    .await;
    let got = collect(&mut records, 5).await;
    assert!(starts_with_sps_pps(&got[0]));
    connector.shutdown().await;

    let mut connector = TestConnector::start(RtspConnector).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "cam",
            unique_name("kps.rtsp.auth"),
            json!({
                "url": server.url(), "username": "viewer", "password_file": bad.display().to_string()
            }),
        )])
        .await
        .unwrap();
    connector
        .wait_for_state("cam", State::Unhealthy, Duration::from_secs(20))
        .await;
    let events = connector.events().await;
    assert!(
        events.iter().all(|e| !e.message.contains("wrong")),
        "the password never shows: {events:#?}"
    );
    connector.shutdown().await;
}

#[tokio::test]
async fn rtp_sequence_gaps_are_counted_and_the_records_still_decode() {
    // The server drops 2% of its RTP packets after the payloader: gaps in the sequence numbers.
    let server = PrivateServer::start(ServerSpec {
        drop_probability: 0.02,
        ..ServerSpec::default()
    })
    .await;
    let (mut connector, mut records) = run_stream(json!({"url": server.url()})).await;
    let got = collect(&mut records, 50).await;
    let metrics = connector.metrics_text().await;
    let events = connector.events().await;
    connector.shutdown().await;

    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.contains(&format!(r#"name="{name}"}}"#)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(counter("rtp_sequence_gaps") > 0, "{metrics}");
    assert!(
        counter("rtp_packets_lost") >= counter("rtp_sequence_gaps"),
        "{metrics}"
    );
    assert!(
        counter("rtsp_frames_skipped") > 0,
        "frames after a gap wait for a keyframe"
    );
    assert!(
        events
            .iter()
            .all(|e| e.state == State::Healthy || e.state == State::Provisioning),
        "loss alone does not break the session: {events:#?}"
    );
    let probe = support::ffprobe_records(&got);
    assert_eq!(probe.frames, 50, "{}", probe.errors);
    assert!(probe.errors.is_empty(), "decoder errors: {}", probe.errors);
}
