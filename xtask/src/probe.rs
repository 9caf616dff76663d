//! Does a service answer on its loopback port? A TCP connect, or for NATS its `INFO` line, which
//! must announce JetStream.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How to tell that a service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection to 127.0.0.1:port is accepted.
    Tcp,
    /// A NATS server whose `INFO` line says `"jetstream":true`.
    NatsJetStream,
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Nothing answers.
    Down,
    /// It answers as the tests need.
    Up,
    /// Something answers, but not as the tests need (the reason says why).
    Unfit(String),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes 127.0.0.1:`port`.
pub fn check(port: u16, probe: Probe) -> Health {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) else {
        return Health::Down;
    };
    match probe {
        Probe::Tcp => Health::Up,
        Probe::NatsJetStream => nats_info(&mut stream),
    }
}

/// Reads the `INFO {...}` line a NATS server sends first and checks it has JetStream.
fn nats_info(stream: &mut TcpStream) -> Health {
    if stream.set_read_timeout(Some(READ_TIMEOUT)).is_err() {
        return Health::Unfit("cannot set a read timeout".into());
    }
    let mut info = Vec::new();
    let mut buf = [0u8; 1024];
    while !info.ends_with(b"\r\n") && info.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => info.extend_from_slice(&buf[..n]),
        }
    }
    nats_info_health(&String::from_utf8_lossy(&info))
}

/// Judges a NATS `INFO` line.
fn nats_info_health(info: &str) -> Health {
    if !info.starts_with("INFO ") {
        Health::Unfit("not a NATS server (no INFO line)".into())
    } else if info.replace(' ', "").contains("\"jetstream\":true") {
        Health::Up
    } else {
        Health::Unfit("NATS without JetStream (start it with -js)".into())
    }
}

/// Waits until the service is [`Health::Up`], at most `timeout`; returns how long it took.
pub fn wait_up(name: &str, port: u16, probe: Probe, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let health = check(port, probe);
        if health == Health::Up {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            match health {
                Health::Unfit(why) => {
                    bail!("{name} answers on 127.0.0.1:{port} after {timeout:?} but {why}")
                }
                _ => bail!("{name} does not answer on 127.0.0.1:{port} after {timeout:?}"),
            }
        }
        pause(Duration::from_millis(200));
    }
}

/// Waits until nothing answers on the port any more, at most `timeout`.
pub fn wait_down(name: &str, port: u16, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while check(port, Probe::Tcp) != Health::Down {
        if start.elapsed() >= timeout {
            bail!("{name} still answers on 127.0.0.1:{port} after {timeout:?}");
        }
        pause(Duration::from_millis(200));
    }
    Ok(())
}

/// Sleeps the calling thread: xtask is synchronous (no async runtime), so this blocks nothing.
#[expect(
    clippy::disallowed_methods,
    reason = "xtask has no async runtime to block"
)]
pub fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use super::*;

    /// A port on which nothing listens (bound, then released).
    fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Serves one connection that receives `greeting`.
    fn serve_once(greeting: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let _ = conn.write_all(greeting.as_bytes());
            }
        });
        port
    }

    #[test]
    fn tcp_probe_sees_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(check(port, Probe::Tcp), Health::Up);
        drop(listener);
        assert_eq!(check(port, Probe::Tcp), Health::Down);
        assert_eq!(check(free_port(), Probe::Tcp), Health::Down);
    }

    #[test]
    fn nats_probe_wants_jetstream() {
        let port = serve_once("INFO {\"server_id\":\"x\",\"jetstream\":true,\"port\":4222} \r\n");
        assert_eq!(check(port, Probe::NatsJetStream), Health::Up);

        let port = serve_once("INFO {\"server_id\":\"x\",\"port\":4222} \r\n");
        let Health::Unfit(why) = check(port, Probe::NatsJetStream) else {
            panic!("not unfit")
        };
        assert!(why.contains("without JetStream"), "{why}");

        let port = serve_once("220 smtp ready\r\n");
        let Health::Unfit(why) = check(port, Probe::NatsJetStream) else {
            panic!("not unfit")
        };
        assert!(why.contains("not a NATS server"), "{why}");
    }

    #[test]
    fn nats_info_parsing_tolerates_spaces() {
        assert_eq!(
            nats_info_health("INFO {\"jetstream\": true}\r\n"),
            Health::Up
        );
        assert!(matches!(
            nats_info_health("INFO {\"jetstream\":false}\r\n"),
            Health::Unfit(_)
        ));
    }

    #[test]
    fn wait_up_times_out_with_a_clear_error() {
        let port = free_port();
        let err = wait_up("demo", port, Probe::Tcp, Duration::from_millis(300)).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("demo does not answer on 127.0.0.1:"), "{err}");
    }

    #[test]
    fn wait_up_and_down_follow_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        wait_up("demo", port, Probe::Tcp, Duration::from_secs(5)).unwrap();
        drop(listener);
        wait_down("demo", port, Duration::from_secs(5)).unwrap();
    }
}
