//! The `kps-connector-amqp` binary: the AMQP connector with the common runtime options.

fn main() -> std::process::ExitCode {
    kps_connector_core::main(kps_connector_amqp::AmqpConnector)
}
