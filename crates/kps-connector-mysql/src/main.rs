//! The `kps-connector-mysql` binary: the common runtime options, the MySQL connector.
fn main() -> std::process::ExitCode {
    kps_connector_core::main(kps_connector_mysql::MysqlConnector::default())
}
