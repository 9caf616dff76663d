//! `kps-connector-kafka`: the Kafka connector's binary.

fn main() -> std::process::ExitCode {
    kps_connector_core::main(kps_connector_kafka::KafkaConnector)
}
