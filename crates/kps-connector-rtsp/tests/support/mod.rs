//! What the RTSP tests share: the shared test server (`cargo xtask services up`, 127.0.0.1:8554),
//! private server instances on other ports (to stop and restart), and ffprobe.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kps_connector_core::Bytes;
use kps_connector_core::testkit::service_unavailable;

/// The shared server `cargo xtask services up` starts: its URL and what it streams.
pub const SHARED_URL: &str = "rtsp://127.0.0.1:8554/test";
/// Frames per second of the shared server.
pub const SHARED_FPS: u32 = 25;
/// Frames per IDR of the shared server.
pub const SHARED_GOP: u32 = 25;
/// Picture size of the shared server.
pub const SHARED_SIZE: (u32, u32) = (320, 240);

/// The system Python, where python3-gi lives.
const PYTHON: &str = "/usr/bin/python3";

/// Fails loudly unless the shared server answers within 10 s (long enough for the server to
/// come back if it is being restarted after a GStreamer abort).
pub async fn require_shared_server() -> &'static str {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 8554));
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        if Instant::now() >= deadline {
            service_unavailable("the RTSP test server at 127.0.0.1:8554", e);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    SHARED_URL
}

/// The test server script in this crate.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testserver/rtsp_server.py")
}

/// How a private server streams.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Frames per second.
    pub fps: u32,
    /// Frames per IDR.
    pub gop: u32,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// x264 bitrate, kbit/s.
    pub bitrate: u32,
    /// videotestsrc pattern (`snow` is incompressible noise: the bitrate is reached).
    pub pattern: &'static str,
    /// Basic authentication (user, password).
    pub auth: Option<(&'static str, &'static str)>,
    /// The fraction of RTP packets the server drops (sequence gaps).
    pub drop_probability: f64,
}

impl Default for ServerSpec {
    fn default() -> Self {
        Self {
            fps: 25,
            gop: 25,
            width: 320,
            height: 240,
            bitrate: 512,
            pattern: "smpte",
            auth: None,
            drop_probability: 0.0,
        }
    }
}

/// A private RTSP server on its own port, stopped when dropped.
pub struct PrivateServer {
    spec: ServerSpec,
    port: u16,
    child: Option<Child>,
}

impl PrivateServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub async fn start(spec: ServerSpec) -> Self {
        let port = free_port();
        let mut server = Self {
            spec,
            port,
            child: None,
        };
        server.start_again().await;
        server
    }

    /// The stream's URL.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/test", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a camera that loses power) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        if !Path::new(PYTHON).exists() {
            service_unavailable("the RTSP test server", format!("{PYTHON} is missing"));
        }
        let spec = &self.spec;
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script())
            .args(["--address", "127.0.0.1", "--path", "/test"])
            .args(["--port", &self.port.to_string()])
            .args(["--fps", &spec.fps.to_string()])
            .args(["--gop", &spec.gop.to_string()])
            .args(["--width", &spec.width.to_string()])
            .args(["--height", &spec.height.to_string()])
            .args(["--bitrate", &spec.bitrate.to_string()])
            .args(["--pattern", spec.pattern])
            .args(["--drop-probability", &spec.drop_probability.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((user, password)) = spec.auth {
            cmd.args(["--username", user, "--password", password]);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            service_unavailable("the RTSP test server", format!("cannot run {PYTHON}: {e}"))
        });
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use std::io::Read;
                    let _ = stderr.read_to_string(&mut err);
                }
                service_unavailable(
                    "the RTSP test server",
                    format!("it exited ({status}): {err}"),
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                service_unavailable("the RTSP test server", "it did not listen within 20s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// What ffprobe says about an H.264 elementary stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Frames decoded.
    pub frames: usize,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// The picture type of every decoded frame (`I`, `P`, ...).
    pub pict_types: Vec<String>,
    /// What the decoder complained about (empty when the stream is clean).
    pub errors: String,
}

/// Writes `records` one after another into a file and decodes it with ffprobe.
pub fn ffprobe_records(records: &[Bytes]) -> Probe {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("stream.h264");
    let mut data = Vec::new();
    for record in records {
        data.extend_from_slice(record);
    }
    std::fs::write(&path, data).expect("write the .h264 file");
    ffprobe(&path)
}

/// Decodes an H.264 elementary stream file with ffprobe: every frame, its picture type, size.
pub fn ffprobe(path: &Path) -> Probe {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-f", "h264", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "frame=pict_type,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap_or_else(|e| service_unavailable("ffprobe (package ffmpeg)", e));
    assert!(output.status.success(), "ffprobe failed: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut probe = Probe {
        frames: 0,
        width: 0,
        height: 0,
        pict_types: Vec::new(),
        errors: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // width,height,pict_type (ffprobe's own field order), then side data, if any
        let fields: Vec<&str> = line.trim().split(',').collect();
        assert!(fields.len() >= 3, "unexpected ffprobe line {line:?}");
        probe.frames += 1;
        probe.width = fields[0].parse().expect("width");
        probe.height = fields[1].parse().expect("height");
        probe.pict_types.push(fields[2].to_owned());
    }
    probe
}

/// The NAL unit types of an Annex B byte stream, in order.
pub fn nal_types(data: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            types.push(data[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}
