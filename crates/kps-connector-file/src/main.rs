//! `kps-connector-file`: the file connector's binary.

fn main() -> std::process::ExitCode {
    kps_connector_core::main(kps_connector_file::FileConnector)
}
