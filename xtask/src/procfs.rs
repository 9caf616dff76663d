//! Which process listens on a port, and is a pid still the process we saw (Linux `/proc`).
//!
//! `services down` stops by pid only what `services up` started: the pid is found from the
//! listening socket right after the start, and its start time guards against pid reuse.

use std::fs;

/// A process, identified beyond pid reuse by its start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`.
    pub start_time: u64,
}

impl ProcessId {
    /// Whether this very process still runs (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

/// The process that listens on TCP `port` (IPv4 or IPv6), if it can be seen: other users'
/// processes are visible to root only.
pub fn listener(port: u16) -> Option<ProcessId> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes
        .iter()
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if wanted
                .iter()
                .any(|socket| target.as_os_str() == socket.as_str())
            {
                return Some(ProcessId {
                    pid,
                    start_time: start_time(pid)?,
                });
            }
        }
    }
    None
}

/// The socket inodes in LISTEN state (`0A`) on `port` in a `/proc/net/tcp{,6}` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    let port_hex = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening = *fields.get(3)? == "0A";
            (listening && local_port.eq_ignore_ascii_case(&port_hex))
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .filter(|inode| *inode != 0)
        .collect()
}

/// The start time of `pid`, or `None` when it does not run.
pub fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a `/proc/<pid>/stat` line (counted after the parenthesised command name, which may
/// itself hold spaces and parentheses).
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the name: start time is field 22, the 20th of them.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1087 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 24501 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1087 0100007F:D2B4 01 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000   104        0 23977 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn finds_listening_sockets_of_a_port() {
        assert_eq!(listening_inodes(TABLE, 4231), vec![24501]);
        assert_eq!(listening_inodes(TABLE, 1883), vec![23977]);
        assert!(listening_inodes(TABLE, 5672).is_empty());
    }

    #[test]
    fn start_time_skips_odd_command_names() {
        let stat =
            "42 (we (ird) name) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 10";
        assert_eq!(parse_start_time(stat), Some(777));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn finds_our_own_listener() {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let found = listener(port);
        assert_eq!(found.map(|id| id.pid), Some(std::process::id()));
        assert!(found.is_some_and(|id| id.is_alive()));
        drop(socket);
        assert_eq!(listener(port), None);
    }

    #[test]
    fn a_reused_pid_is_not_alive() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(
            ProcessId {
                pid: me,
                start_time: start
            }
            .is_alive()
        );
        assert!(
            !ProcessId {
                pid: me,
                start_time: start + 1
            }
            .is_alive()
        );
    }
}
