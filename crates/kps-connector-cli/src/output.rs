//! Tables for people, colour on terminals, and the event and stream rows both share with `--json`.

use std::io::IsTerminal;
use std::time::SystemTime;

use kps_connector_core::proto;

/// Prints rows as a table with a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(visible_len(cell));
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(visible_len(cell)) + 2;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The length of `text` without ANSI colour sequences.
fn visible_len(text: &str) -> usize {
    let mut len = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => len += 1,
        }
    }
    len
}

/// Whether standard output is a terminal (colour only then).
pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `STATE_HEALTHY` -> `HEALTHY`, coloured when `colour`.
pub fn state_label(state: i32, colour: bool) -> String {
    let name = proto::State::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("STATE_").to_owned())
        .unwrap_or_else(|_| format!("STATE({state})"));
    if !colour {
        return name;
    }
    let code = match name.as_str() {
        "HEALTHY" | "PROVISIONED" => "32",
        "UNHEALTHY" => "33",
        "FAILED" => "31",
        "PROVISIONING" => "36",
        _ => "0",
    };
    format!("\u{1b}[{code}m{name}\u{1b}[0m")
}

/// One event, flattened.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventRow {
    /// `status` or `alert`.
    pub kind: &'static str,
    /// The event id.
    pub id: String,
    /// The stream id.
    pub stream_id: String,
    /// `HEALTHY`, ...
    pub state: String,
    /// `WARNING`, ... for alerts.
    pub severity: Option<String>,
    /// The message.
    pub message: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    #[serde(skip)]
    state_code: i32,
    #[serde(skip)]
    time: Option<SystemTime>,
}

impl EventRow {
    /// Flattens an EventPayload.
    pub fn from_proto(payload: proto::EventPayload) -> Option<Self> {
        let state_name = |s: i32| state_label(s, false);
        let (kind, id, stream_id, state, severity, message, created_at) = match payload.object? {
            proto::event_payload::Object::Status(s) => (
                "status",
                s.id,
                s.stream_id,
                s.state,
                None,
                s.message,
                s.created_at,
            ),
            proto::event_payload::Object::Alert(a) => {
                let severity = proto::Severity::try_from(a.severity)
                    .map(|s| s.as_str_name().trim_start_matches("SEVERITY_").to_owned())
                    .ok();
                (
                    "alert",
                    a.id,
                    a.stream_id,
                    a.state,
                    severity,
                    a.message,
                    a.created_at,
                )
            }
        };
        let time = created_at.and_then(|t| SystemTime::try_from(t).ok());
        Some(Self {
            kind,
            id,
            stream_id,
            state: state_name(state),
            severity,
            message,
            created_at: time.map(rfc3339).unwrap_or_default(),
            state_code: state,
            time,
        })
    }

    /// When it began.
    pub fn time(&self) -> Option<SystemTime> {
        self.time
    }

    /// The table cells.
    pub fn cells(&self, colour: bool) -> Vec<String> {
        vec![
            self.created_at.clone(),
            match &self.severity {
                Some(s) => format!("alert/{}", s.to_ascii_lowercase()),
                None => "status".to_owned(),
            },
            if self.stream_id.is_empty() {
                "-".to_owned()
            } else {
                self.stream_id.clone()
            },
            self.id.clone(),
            state_label(self.state_code, colour),
            self.message.clone(),
        ]
    }
}

/// The header of event tables.
pub const EVENT_HEADER: &[&str] = &["TIME", "KIND", "STREAM", "ID", "STATE", "MESSAGE"];

/// A time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_ignoring_colour() {
        let text = table(
            &["A", "B"],
            &[vec!["\u{1b}[32mlong\u{1b}[0m".into(), "x".into()]],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "A     B");
        assert!(lines[1].ends_with("long\u{1b}[0m  x"));
    }

    #[test]
    fn rfc3339_formats_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
    }
}
