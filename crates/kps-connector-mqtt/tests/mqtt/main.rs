//! Integration tests of the MQTT connector against real brokers: the shared Mosquitto on
//! 127.0.0.1:1883 (`cargo xtask services up`) and private `mosquitto` instances for the tests
//! that stop a broker or need their own config, with NATS on 127.0.0.1:4222.

mod churn;
mod common;
mod conformance;
mod egress;
mod fuzz_corpus;
mod ingress;
mod params;
mod recovery;
mod secrets;
mod tls;
