//! The `kps-connector-rtsp` binary: the RTSP connector with the core's runtime and common flags.

fn main() -> std::process::ExitCode {
    kps_connector_core::main(kps_connector_rtsp::RtspConnector)
}
