//! The RTSP test server of the RTSP connector's tests: GStreamer's RTSP server driven by a small
//! Python script kept in the connector's crate (`crates/kps-connector-rtsp/testserver/`), run
//! with the system Python (where python3-gi lives), streaming an H.264 test pattern at a known
//! frame rate and GOP length on 127.0.0.1:8554, over TCP and UDP.

use std::time::Duration;

use anyhow::{Result, bail};

use super::{Argv, Install, Service, Stop};
use crate::host::Ctx;
use crate::probe::Probe;

/// The port of the shared server.
pub const PORT: u16 = 8554;

/// What the shared server streams (the tests rely on these numbers).
pub const PATH: &str = "/test";
/// Frames per second.
pub const FPS: u32 = 25;
/// Frames per IDR (x264 `key-int-max`).
pub const GOP: u32 = 25;
/// Picture width.
pub const WIDTH: u32 = 320;
/// Picture height.
pub const HEIGHT: u32 = 240;

/// The script, relative to the workspace root.
const SCRIPT: &str = "crates/kps-connector-rtsp/testserver/rtsp_server.py";

/// The system Python (not a pyenv one on `PATH`: python3-gi is installed for this one).
const PYTHON: &str = "/usr/bin/python3";

/// The file installed by gir1.2-gst-rtsp-server-1.0 whose presence means the server can run.
const TYPELIB: &str = if cfg!(target_arch = "aarch64") {
    "/usr/lib/aarch64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib"
} else {
    "/usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib"
};

/// The Debian packages: the server, its encoder and payloader plugins, and ffmpeg (the tests
/// decode what the connector published with ffprobe).
const PACKAGES: &[&str] = &[
    "python3-gi",
    "gir1.2-gst-rtsp-server-1.0",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
    "gstreamer1.0-rtsp",
    "ffmpeg",
];

/// The `rtsp` service entry.
pub fn service() -> Service {
    Service {
        name: "rtsp",
        port: PORT,
        probe: Probe::Tcp,
        binary: TYPELIB,
        install: Install::Apt(PACKAGES),
        start,
        stop: Stop::Terminate,
        setup: None,
        start_timeout: Duration::from_secs(30),
    }
}

/// Starts the script in the background with `start-stop-daemon`, its output in the service's
/// start log.
fn start(ctx: &Ctx) -> Result<Vec<Argv>> {
    let script = ctx.paths.root.join(SCRIPT);
    if !script.is_file() {
        bail!(
            "the RTSP test server script {} is missing",
            script.display()
        );
    }
    let log = ctx.paths.start_log("rtsp");
    let pidfile = ctx.paths.xtask_dir.join("rtsp.pid");
    let mut argv: Argv = [
        "start-stop-daemon",
        "--start",
        "--background",
        "--make-pidfile",
        "--pidfile",
    ]
    .map(str::to_owned)
    .into();
    argv.push(pidfile.display().to_string());
    argv.push("--output".to_owned());
    argv.push(log.display().to_string());
    argv.extend(["--startas", PYTHON, "--"].map(str::to_owned));
    argv.push(script.display().to_string());
    argv.extend(server_args());
    // `up` starts it only when nothing answers on the port: a pid file left by an earlier run
    // (whose process may still be exiting) must not make start-stop-daemon think it runs.
    let forget_pidfile = vec!["rm".into(), "-f".into(), pidfile.display().to_string()];
    Ok(vec![forget_pidfile, argv])
}

/// The script's arguments for the shared server (restarted by the script itself if GStreamer
/// aborts: every RTSP test uses this one server).
fn server_args() -> Vec<String> {
    vec![
        "--restart".into(),
        "--address".into(),
        "127.0.0.1".into(),
        "--port".into(),
        PORT.to_string(),
        "--path".into(),
        PATH.into(),
        "--fps".into(),
        FPS.to_string(),
        "--gop".into(),
        GOP.to_string(),
        "--width".into(),
        WIDTH.to_string(),
        "--height".into(),
        HEIGHT.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_the_script_with_the_system_python_in_the_background() {
        let ctx = Ctx::detect().unwrap();
        let commands = start(&ctx).unwrap();
        assert_eq!(commands.len(), 2);
        assert!(commands[0].join(" ").starts_with("rm -f "), "{commands:?}");
        assert!(commands[0].join(" ").ends_with("rtsp.pid"), "{commands:?}");
        let line = commands[1].join(" ");
        assert!(
            line.starts_with("start-stop-daemon --start --background --make-pidfile"),
            "{line}"
        );
        assert!(line.contains("--startas /usr/bin/python3 -- "), "{line}");
        assert!(
            line.contains("testserver/rtsp_server.py --restart --address 127.0.0.1 --port 8554 --path /test --fps 25 --gop 25 --width 320 --height 240"),
            "{line}"
        );
        assert!(line.contains("logs/rtsp.log"), "{line}");
        let svc = service();
        assert_eq!((svc.name, svc.port), ("rtsp", 8554));
        assert!(svc.packages().contains(&"gir1.2-gst-rtsp-server-1.0"));
    }
}
