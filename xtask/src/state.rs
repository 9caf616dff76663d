//! What `services up` started, remembered in `target/xtask/services.state` so that `services down`
//! stops only that. One line per service: `name pid start_time` (`-` when the pid could not be
//! seen, e.g. when not root).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::procfs::ProcessId;

/// One service that `services up` started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The service name, as in the table.
    pub service: String,
    /// The process that listened on its port after the start, when it could be seen.
    pub process: Option<ProcessId>,
}

/// The services that `services up` started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    records: Vec<Record>,
}

impl State {
    /// Reads the state file (a missing file is an empty state).
    pub fn load(path: &Path) -> Result<State> {
        match fs::read_to_string(path) {
            Ok(text) => Ok(State::parse(&text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state file (through a temporary file, so a reader never sees half of it).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, self.format())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The record of `service`.
    pub fn get(&self, service: &str) -> Option<&Record> {
        self.records.iter().find(|record| record.service == service)
    }

    /// Remembers that `up` started `record.service` (replacing an older record).
    pub fn insert(&mut self, record: Record) {
        self.remove(&record.service);
        self.records.push(record);
    }

    /// Forgets `service`.
    pub fn remove(&mut self, service: &str) {
        self.records.retain(|record| record.service != service);
    }

    fn parse(text: &str) -> State {
        let records = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let service = fields.next()?.to_owned();
                let pid = fields.next().and_then(|pid| pid.parse().ok());
                let start_time = fields.next().and_then(|time| time.parse().ok());
                let process = pid
                    .zip(start_time)
                    .map(|(pid, start_time)| ProcessId { pid, start_time });
                Some(Record { service, process })
            })
            .collect();
        State { records }
    }

    fn format(&self) -> String {
        let mut text =
            String::from("# services started by `cargo xtask services up`: name pid start_time\n");
        for record in &self.records {
            match record.process {
                Some(id) => text.push_str(&format!(
                    "{} {} {}\n",
                    record.service, id.pid, id.start_time
                )),
                None => text.push_str(&format!("{} - -\n", record.service)),
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file_format() {
        let mut state = State::default();
        state.insert(Record {
            service: "mosquitto".into(),
            process: Some(ProcessId {
                pid: 42,
                start_time: 777,
            }),
        });
        state.insert(Record {
            service: "rabbitmq".into(),
            process: None,
        });
        let text = state.format();
        assert!(text.contains("mosquitto 42 777\n"), "{text}");
        assert!(text.contains("rabbitmq - -\n"), "{text}");
        assert_eq!(State::parse(&text), state);
    }

    #[test]
    fn insert_replaces_and_remove_forgets() {
        let mut state = State::default();
        state.insert(Record {
            service: "nats".into(),
            process: None,
        });
        let newer = Record {
            service: "nats".into(),
            process: Some(ProcessId {
                pid: 1,
                start_time: 2,
            }),
        };
        state.insert(newer.clone());
        assert_eq!(state.get("nats"), Some(&newer));
        state.remove("nats");
        assert_eq!(state.get("nats"), None);
    }

    #[test]
    fn load_and_save_use_the_file() {
        let dir = std::env::temp_dir().join(format!("xtask-state-{}", std::process::id()));
        let path = dir.join("services.state");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut state = State::default();
        state.insert(Record {
            service: "mariadb".into(),
            process: Some(ProcessId {
                pid: 7,
                start_time: 8,
            }),
        });
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        fs::remove_dir_all(&dir).unwrap();
    }
}
