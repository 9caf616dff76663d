#!/usr/bin/python3
"""The RTSP test server of kps-connector-rtsp: an H.264 test pattern at a known frame rate and
GOP length, served over RTSP (TCP interleaved and UDP) by GStreamer's RTSP server.

Run with the system Python (python3-gi lives there):

    /usr/bin/python3 rtsp_server.py --port 8554 --path /test --fps 25 --gop 25 \
        --width 320 --height 240

`cargo xtask services up` starts it on 127.0.0.1:8554 with --restart; the connector's tests
start private instances on other ports (to stop and restart them). The media is shared between clients, so
every client sees the same live stream; each client starts at the next keyframe it receives.
Packages: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad,ugly}
gstreamer1.0-rtsp.
"""

import argparse
import signal
import subprocess
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def launch_line(args):
    """The media pipeline: a live test pattern encoded with x264, one IDR every --gop frames."""
    pattern = f"videotestsrc is-live=true pattern={args.pattern}"
    caps = f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1"
    encoder = (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.gop} "
        f"bitrate={args.bitrate} byte-stream=false"
    )
    # config-interval=-1: SPS/PPS in band before every IDR as well as in the SDP.
    payloader = "rtph264pay pt=96 config-interval=-1"
    if args.drop_probability > 0:
        # Loses RTP packets after the payloader: gaps in the sequence numbers, as on a bad link.
        payloader += f" ! identity name=pay0 drop-probability={args.drop_probability}"
    else:
        payloader += " name=pay0"
    return f"( {pattern} ! {caps} ! {encoder} ! video/x-h264,profile=baseline ! {payloader} )"


def supervise(argv):
    """Runs the server as a child process and starts it again whenever it dies abnormally.

    GStreamer's RTSP server (1.22) can abort on an internal assertion when clients of a shared
    media come and go at once (gst_rtsp_media_get_rates); one server serves every test, so a
    crash would fail every test after it. A clean exit of the child (it exits 0 on SIGTERM or
    SIGINT, which `cargo xtask services down` sends to the process listening on the port) ends
    the supervisor too, as do SIGTERM/SIGINT sent to the supervisor itself. Gives up after 5
    deaths within 10 seconds (a server that cannot start at all).
    """
    child_argv = [sys.executable, __file__] + [a for a in argv if a != "--restart"]
    stopping = False
    child = None

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    deaths = []
    while True:
        child = subprocess.Popen(child_argv)
        code = child.wait()
        if stopping or code == 0:
            return 0
        now = time.monotonic()
        deaths = [t for t in deaths if now - t < 10] + [now]
        print(f"rtsp server exited with {code}; starting it again", file=sys.stderr, flush=True)
        if len(deaths) >= 5:
            print("rtsp server died 5 times within 10 s; giving up", file=sys.stderr, flush=True)
            return 1
        time.sleep(0.2)


def main():
    if "--restart" in sys.argv[1:]:
        return supervise(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--path", default="/test")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=25, help="frames per IDR (key-int-max)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--bitrate", type=int, default=512, help="x264 bitrate in kbit/s")
    parser.add_argument("--pattern", default="smpte", help="videotestsrc pattern")
    parser.add_argument(
        "--drop-probability",
        type=float,
        default=0.0,
        help="drop this fraction of the RTP packets (sequence gaps, for tests)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start the server again whenever it dies on its own (the shared test server)",
    )
    parser.add_argument("--username", help="require RTSP basic authentication")
    parser.add_argument("--password", default="")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(True)
    factory.set_protocols(
        GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP
    )

    if args.username:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        basic = GstRtspServer.RTSPAuth.make_basic(args.username, args.password)
        auth.add_basic(basic, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", "media.factory.access", True)
        permissions.add_permission_for_role("user", "media.factory.construct", True)
        factory.set_permissions(permissions)

    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.address}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(
        f"rtsp://{args.address}:{args.port}{args.path} "
        f"{args.width}x{args.height} {args.fps} fps gop {args.gop} bitrate {args.bitrate} kbit/s",
        flush=True,
    )
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
