//! The `kps-connector-mqtt` binary: the MQTT connector run by the core (flags: `--help`).

fn main() -> std::process::ExitCode {
    kps_connector_core::main(kps_connector_mqtt::MqttConnector)
}
