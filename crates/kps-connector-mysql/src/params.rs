//! One stream's parameters: the typed metadata (its JSON Schema is the class's
//! `streamParameterSchema`), the rules per direction, and the resolved settings the source and
//! sink run with.

use std::str::FromStr;
use std::time::Duration;

use kps_connector_core::{ConnectorError, ConnectorResult, Direction, PasswordSource};
use schemars::JsonSchema;
use serde::Deserialize;
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;

use crate::ident::{Ident, ident_list, shown};
use crate::tls::{SslMode, TlsSettings};

/// Rows per query (ingress) or per INSERT statement (egress) unless `batch_size` says otherwise.
pub const DEFAULT_BATCH_SIZE: u32 = 1000;
/// The largest `batch_size` accepted.
pub const MAX_BATCH_SIZE: u32 = 100_000;
/// How long an ingress stream waits after a query found no new rows, unless configured.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 1000;
/// The poll interval's accepted range.
pub const POLL_INTERVAL_RANGE_MS: std::ops::RangeInclusive<u64> = 10..=86_400_000;

/// One stream's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlParams {
    /// The database, as `mysql://user@host:port/database`. A password in the URL is refused:
    /// give it with `password_file` or `password_env`. No query parameters (TLS is set with
    /// `ssl_mode`, `ca_file`, `cert_file` and `key_file`).
    pub url: String,
    /// The table the stream reads (ingress) or writes (egress); letters, digits, `_` and `$`.
    pub table: String,
    /// Ingress: `incrementing`, `timestamp` or `timestamp+incrementing` (required).
    /// Egress: `insert` (default) or `upsert` (INSERT ... ON DUPLICATE KEY UPDATE).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Ingress, modes `incrementing` and `timestamp+incrementing`: a strictly increasing
    /// integer column (typically the AUTO_INCREMENT primary key).
    #[serde(default)]
    pub cursor_column: Option<String>,
    /// Ingress, modes `timestamp` and `timestamp+incrementing`: a last-modified
    /// TIMESTAMP, DATETIME or DATE column.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Ingress: how long to wait after a query found no new rows, in milliseconds
    /// (default 1000, 10 to 86400000).
    #[serde(default)]
    #[schemars(range(min = 10, max = 86_400_000))]
    pub poll_interval_ms: Option<u64>,
    /// Rows per query (ingress) or rows per INSERT statement (egress); default 1000.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100_000))]
    pub batch_size: Option<u32>,
    /// The columns to read (ingress: the record's fields, in this order) or that records may
    /// set (egress); default: every column of the table.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Ingress, when no cursor was saved yet: `beginning` (default: every row) or `now`
    /// (only rows added after the stream first started).
    #[serde(default)]
    pub start: Option<Start>,
    /// Egress, mode `upsert` (required there): the columns of the primary key or unique index
    /// that identifies a row; every other column a record sets is updated.
    #[serde(default)]
    pub key_columns: Option<Vec<String>>,
    /// A file holding the database password (a mounted Kubernetes secret).
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the database password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS to the server: `disabled`, `preferred` (TLS when the server offers it, certificate
    /// not checked), `required` (TLS, certificate not checked), `verify_ca` (the certificate must
    /// chain to `ca_file` or the system's CA store) or `verify_identity` (and name the URL's
    /// host). Default: `verify_ca` with `ca_file`, else `preferred`.
    #[serde(default)]
    pub ssl_mode: Option<SslMode>,
    /// `verify_ca` / `verify_identity`: a PEM file of the CA certificates that signed the
    /// server's certificate, trusted besides the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// A PEM client certificate (chain) for a server that requires one; needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// The PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[serde(default)]
    pub key_file: Option<String>,
}

/// How a stream follows or writes its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Mode {
    /// Ingress: new rows by a strictly increasing column.
    #[serde(rename = "incrementing")]
    Incrementing,
    /// Ingress: new and changed rows by a last-modified column.
    #[serde(rename = "timestamp")]
    Timestamp,
    /// Ingress: new and changed rows by a last-modified column, ties broken by an increasing
    /// column.
    #[serde(rename = "timestamp+incrementing")]
    TimestampIncrementing,
    /// Egress: INSERT.
    #[serde(rename = "insert")]
    Insert,
    /// Egress: INSERT ... ON DUPLICATE KEY UPDATE.
    #[serde(rename = "upsert")]
    Upsert,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Incrementing => "incrementing",
            Mode::Timestamp => "timestamp",
            Mode::TimestampIncrementing => "timestamp+incrementing",
            Mode::Insert => "insert",
            Mode::Upsert => "upsert",
        }
    }
}

/// Where an ingress stream starts when it has no saved cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Every row already in the table.
    #[default]
    Beginning,
    /// Only rows after the newest one when the stream first started.
    Now,
}

/// A validated database URL (no password, no query) and the parts shown in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUrl {
    url: String,
    database: String,
    shown: String,
}

impl DbUrl {
    /// Validates `url` for the parameter `field`.
    pub fn parse(field: &str, url: &str) -> ConnectorResult<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ConnectorError::invalid(field, format!("not a url: {e}")))?;
        if parsed.password().is_some() {
            return Err(ConnectorError::invalid(
                field,
                "a password in the url is refused; give it with password_file or password_env",
            ));
        }
        if parsed.scheme() != "mysql" {
            return Err(ConnectorError::invalid(
                field,
                format!(
                    "expects mysql://user@host:port/database, not the scheme {:?}",
                    parsed.scheme()
                ),
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ConnectorError::invalid(field, "names no host"))?;
        let database = parsed.path().trim_start_matches('/');
        if database.is_empty() || database.contains('/') {
            return Err(ConnectorError::invalid(
                field,
                "expects the database as the path: mysql://user@host:port/database",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ConnectorError::invalid(
                field,
                "takes no query parameters (the session time zone is always UTC; TLS is set with ssl_mode, ca_file, cert_file and key_file)",
            ));
        }
        let port = parsed.port().unwrap_or(3306);
        let database = percent_decode(database);
        Ok(Self {
            url: url.to_owned(),
            shown: format!("{host}:{port}/{database}"),
            database,
        })
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// `host:port/database`, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The URL as given (it holds no password).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Connect options: this URL, the password (loaded now, so a rotated secret is used on
    /// reconnect), `tls` (its files read now too), the session time zone UTC, no statement
    /// logging.
    pub async fn connect_options(
        &self,
        password: &PasswordSource,
        tls: &TlsSettings,
    ) -> ConnectorResult<MySqlConnectOptions> {
        let mut options = MySqlConnectOptions::from_str(&self.url)
            .map_err(|e| ConnectorError::invalid("url", format!("not a mysql url: {e}")))?
            .timezone(Some("+00:00".to_owned()))
            .statement_cache_capacity(64)
            .disable_statement_logging();
        if let Some(secret) = password.load().await? {
            options = options.password(secret.expose());
        }
        tls.apply(options).await
    }
}

fn percent_decode(text: &str) -> String {
    // Database names are identifiers in practice; decode %XX for completeness.
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What both directions need: where the table is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSettings {
    /// The database.
    pub url: DbUrl,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// TLS to the server.
    pub tls: TlsSettings,
    /// The table.
    pub table: Ident,
    /// The columns to read or allow, if restricted.
    pub columns: Option<Vec<Ident>>,
    /// Rows per query or per INSERT statement.
    pub batch_size: usize,
}

impl TableSettings {
    fn from_params(p: &MysqlParams) -> ConnectorResult<Self> {
        let url = DbUrl::parse("url", &p.url)?;
        let password = PasswordSource {
            password_file: p.password_file.clone(),
            password_env: p.password_env.clone(),
        };
        password.validate()?;
        let tls = TlsSettings::resolve(
            p.ssl_mode,
            p.ca_file.as_deref(),
            p.cert_file.as_deref(),
            p.key_file.as_deref(),
        )?;
        let table = Ident::new(&p.table)
            .map_err(|e| ConnectorError::invalid("table", format!("{}: {e}", shown(&p.table))))?;
        let columns = match &p.columns {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(ConnectorError::invalid(
                    "columns",
                    "must name at least one column when given",
                ));
            }
            Some(list) => Some(ident_list("columns", list)?),
        };
        let batch_size = p.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            return Err(ConnectorError::invalid(
                "batch_size",
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            ));
        }
        Ok(Self {
            url,
            password,
            tls,
            table,
            columns,
            batch_size: batch_size as usize,
        })
    }
}

/// How an ingress stream finds new rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressMode {
    /// `WHERE cursor > ?`.
    Incrementing {
        /// The increasing integer column.
        cursor: Ident,
    },
    /// `WHERE ts > ?`, whole groups of equal timestamps at a time.
    Timestamp {
        /// The last-modified column.
        timestamp: Ident,
    },
    /// `WHERE (ts, cursor) > (?, ?)`.
    TimestampIncrementing {
        /// The last-modified column.
        timestamp: Ident,
        /// The increasing integer column.
        cursor: Ident,
    },
}

impl IngressMode {
    /// The mode's name as in the parameters.
    pub fn name(&self) -> &'static str {
        match self {
            IngressMode::Incrementing { .. } => Mode::Incrementing.as_str(),
            IngressMode::Timestamp { .. } => Mode::Timestamp.as_str(),
            IngressMode::TimestampIncrementing { .. } => Mode::TimestampIncrementing.as_str(),
        }
    }

    /// The increasing column, if the mode has one.
    pub fn cursor(&self) -> Option<&Ident> {
        match self {
            IngressMode::Incrementing { cursor }
            | IngressMode::TimestampIncrementing { cursor, .. } => Some(cursor),
            IngressMode::Timestamp { .. } => None,
        }
    }

    /// The last-modified column, if the mode has one.
    pub fn timestamp(&self) -> Option<&Ident> {
        match self {
            IngressMode::Timestamp { timestamp }
            | IngressMode::TimestampIncrementing { timestamp, .. } => Some(timestamp),
            IngressMode::Incrementing { .. } => None,
        }
    }
}

/// An ingress stream's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    /// The table and connection.
    pub table: TableSettings,
    /// How new rows are found.
    pub mode: IngressMode,
    /// The wait after an empty query.
    pub poll_interval: Duration,
    /// Where to start without a saved cursor.
    pub start: Start,
}

impl IngressSettings {
    /// Resolves and checks ingress parameters.
    pub fn from_params(p: &MysqlParams) -> ConnectorResult<Self> {
        let table = TableSettings::from_params(p)?;
        if p.key_columns.is_some() {
            return Err(ConnectorError::invalid(
                "key_columns",
                "applies to egress upsert streams only",
            ));
        }
        let column = |field: &str, value: &Option<String>, mode: Mode| -> ConnectorResult<Ident> {
            let name = value.as_deref().ok_or_else(|| {
                ConnectorError::invalid(field, format!("is required in mode {}", mode.as_str()))
            })?;
            Ident::new(name)
                .map_err(|e| ConnectorError::invalid(field, format!("{}: {e}", shown(name))))
        };
        let unused = |field: &str, value: &Option<String>, mode: Mode| -> ConnectorResult<()> {
            match value {
                Some(_) => Err(ConnectorError::invalid(
                    field,
                    format!("is not used in mode {}", mode.as_str()),
                )),
                None => Ok(()),
            }
        };
        let mode = match p.mode {
            None => {
                return Err(ConnectorError::invalid(
                    "mode",
                    "is required for ingress: incrementing, timestamp or timestamp+incrementing",
                ));
            }
            Some(m @ Mode::Incrementing) => {
                unused("timestamp_column", &p.timestamp_column, m)?;
                IngressMode::Incrementing {
                    cursor: column("cursor_column", &p.cursor_column, m)?,
                }
            }
            Some(m @ Mode::Timestamp) => {
                unused("cursor_column", &p.cursor_column, m)?;
                IngressMode::Timestamp {
                    timestamp: column("timestamp_column", &p.timestamp_column, m)?,
                }
            }
            Some(m @ Mode::TimestampIncrementing) => {
                let timestamp = column("timestamp_column", &p.timestamp_column, m)?;
                let cursor = column("cursor_column", &p.cursor_column, m)?;
                if timestamp == cursor {
                    return Err(ConnectorError::invalid(
                        "cursor_column",
                        "must differ from timestamp_column",
                    ));
                }
                IngressMode::TimestampIncrementing { timestamp, cursor }
            }
            Some(m) => {
                return Err(ConnectorError::invalid(
                    "mode",
                    format!(
                        "{} is an egress mode; ingress takes incrementing, timestamp or timestamp+incrementing",
                        m.as_str()
                    ),
                ));
            }
        };
        let poll_ms = p.poll_interval_ms.unwrap_or(DEFAULT_POLL_INTERVAL_MS);
        if !POLL_INTERVAL_RANGE_MS.contains(&poll_ms) {
            return Err(ConnectorError::invalid(
                "poll_interval_ms",
                format!(
                    "must be between {} and {}",
                    POLL_INTERVAL_RANGE_MS.start(),
                    POLL_INTERVAL_RANGE_MS.end()
                ),
            ));
        }
        Ok(Self {
            table,
            mode,
            poll_interval: Duration::from_millis(poll_ms),
            start: p.start.unwrap_or_default(),
        })
    }
}

/// An egress stream's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSettings {
    /// The table and connection.
    pub table: TableSettings,
    /// `Some(key columns)` in upsert mode.
    pub upsert_keys: Option<Vec<Ident>>,
}

impl EgressSettings {
    /// Resolves and checks egress parameters.
    pub fn from_params(p: &MysqlParams) -> ConnectorResult<Self> {
        let table = TableSettings::from_params(p)?;
        for (field, given) in [
            ("cursor_column", p.cursor_column.is_some()),
            ("timestamp_column", p.timestamp_column.is_some()),
            ("poll_interval_ms", p.poll_interval_ms.is_some()),
            ("start", p.start.is_some()),
        ] {
            if given {
                return Err(ConnectorError::invalid(
                    field,
                    "applies to ingress streams only",
                ));
            }
        }
        let upsert_keys = match p.mode.unwrap_or(Mode::Insert) {
            Mode::Insert => {
                if p.key_columns.is_some() {
                    return Err(ConnectorError::invalid(
                        "key_columns",
                        "applies to mode upsert only",
                    ));
                }
                None
            }
            Mode::Upsert => {
                let keys = p
                    .key_columns
                    .as_deref()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        ConnectorError::invalid("key_columns", "is required in mode upsert")
                    })?;
                let keys = ident_list("key_columns", keys)?;
                if let Some(columns) = &table.columns
                    && let Some(missing) = keys.iter().find(|k| !columns.contains(k))
                {
                    return Err(ConnectorError::invalid(
                        "key_columns",
                        format!("`{missing}` is not among the stream's columns"),
                    ));
                }
                Some(keys)
            }
            m => {
                return Err(ConnectorError::invalid(
                    "mode",
                    format!(
                        "{} is an ingress mode; egress takes insert or upsert",
                        m.as_str()
                    ),
                ));
            }
        };
        Ok(Self { table, upsert_keys })
    }
}

/// Checks `params` for `direction` (what `Connector::validate` runs).
pub fn validate(direction: Direction, params: &MysqlParams) -> ConnectorResult<()> {
    match direction {
        Direction::Ingress => IngressSettings::from_params(params).map(|_| ()),
        Direction::Egress => EgressSettings::from_params(params).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> MysqlParams {
        kps_connector_core::params::parse_params(v.as_object().unwrap()).unwrap()
    }

    fn field(r: ConnectorResult<()>) -> String {
        match r {
            Err(ConnectorError::InvalidParameter { field, .. }) => field,
            other => panic!("expected an invalid parameter, got {other:?}"),
        }
    }

    const URL: &str = "mysql://root@127.0.0.1:3306/test";

    #[test]
    fn ingress_needs_a_mode_and_its_columns() {
        let ok =
            parse(json!({"url": URL, "table": "t", "mode": "incrementing", "cursor_column": "id"}));
        let s = IngressSettings::from_params(&ok).unwrap();
        assert_eq!(s.poll_interval, Duration::from_millis(1000));
        assert_eq!(s.table.batch_size, 1000);
        assert_eq!(s.start, Start::Beginning);
        assert_eq!(
            field(validate(
                Direction::Ingress,
                &parse(json!({"url": URL, "table": "t"}))
            )),
            "mode"
        );
        let no_cursor = parse(json!({"url": URL, "table": "t", "mode": "incrementing"}));
        assert_eq!(
            field(validate(Direction::Ingress, &no_cursor)),
            "cursor_column"
        );
        let ts = parse(
            json!({"url": URL, "table": "t", "mode": "timestamp+incrementing", "cursor_column": "id"}),
        );
        assert_eq!(field(validate(Direction::Ingress, &ts)), "timestamp_column");
        let egress_mode = parse(json!({"url": URL, "table": "t", "mode": "upsert"}));
        assert_eq!(field(validate(Direction::Ingress, &egress_mode)), "mode");
        let slow = parse(
            json!({"url": URL, "table": "t", "mode": "timestamp", "timestamp_column": "ts", "poll_interval_ms": 1}),
        );
        assert_eq!(
            field(validate(Direction::Ingress, &slow)),
            "poll_interval_ms"
        );
    }

    #[test]
    fn egress_defaults_to_insert_and_upsert_needs_keys() {
        let insert = parse(json!({"url": URL, "table": "t"}));
        assert_eq!(
            EgressSettings::from_params(&insert).unwrap().upsert_keys,
            None
        );
        let upsert = parse(json!({"url": URL, "table": "t", "mode": "upsert"}));
        assert_eq!(field(validate(Direction::Egress, &upsert)), "key_columns");
        let keyed =
            parse(json!({"url": URL, "table": "t", "mode": "upsert", "key_columns": ["id"]}));
        assert!(validate(Direction::Egress, &keyed).is_ok());
        let cursor = parse(json!({"url": URL, "table": "t", "cursor_column": "id"}));
        assert_eq!(field(validate(Direction::Egress, &cursor)), "cursor_column");
        let outside = parse(
            json!({"url": URL, "table": "t", "mode": "upsert", "key_columns": ["id"], "columns": ["v"]}),
        );
        assert_eq!(field(validate(Direction::Egress, &outside)), "key_columns");
    }

    #[test]
    fn identifiers_are_validated() {
        let evil = parse(json!({"url": URL, "table": "x`; DROP TABLE y"}));
        assert_eq!(field(validate(Direction::Egress, &evil)), "table");
        let evil_col = parse(json!({"url": URL, "table": "t", "columns": ["a", "b`c"]}));
        assert_eq!(field(validate(Direction::Egress, &evil_col)), "columns");
        let evil_cursor = parse(
            json!({"url": URL, "table": "t", "mode": "incrementing", "cursor_column": "id) OR 1=1 --"}),
        );
        assert_eq!(
            field(validate(Direction::Ingress, &evil_cursor)),
            "cursor_column"
        );
        let evil_key =
            parse(json!({"url": URL, "table": "t", "mode": "upsert", "key_columns": ["id;"]}));
        assert_eq!(field(validate(Direction::Egress, &evil_key)), "key_columns");
    }

    #[test]
    fn urls_carry_no_password() {
        let with_pw = parse(json!({"url": "mysql://root:hunter2@db:3306/test", "table": "t"}));
        let err = EgressSettings::from_params(&with_pw).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(field(Err(err)), "url");
        for bad in [
            "postgres://u@h/db",
            "mysql://u@h",
            "mysql://u@h/db?timezone=SYSTEM",
            "not a url",
        ] {
            let p = parse(json!({"url": bad, "table": "t"}));
            assert_eq!(field(validate(Direction::Egress, &p)), "url", "{bad}");
        }
        let url = DbUrl::parse("url", "mysql://app@db.example:3307/shop").unwrap();
        assert_eq!(
            (url.database(), url.shown()),
            ("shop", "db.example:3307/shop")
        );
        let both =
            parse(json!({"url": URL, "table": "t", "password_file": "/a", "password_env": "B"}));
        assert_eq!(field(validate(Direction::Egress, &both)), "password_file");
    }

    #[test]
    fn tls_parameters_resolve_and_are_checked() {
        let plain = parse(json!({"url": URL, "table": "t"}));
        let settings = EgressSettings::from_params(&plain).unwrap();
        assert_eq!(settings.table.tls.mode, SslMode::Preferred);
        let ca = parse(json!({"url": URL, "table": "t", "ca_file": "/ca.pem"}));
        let settings = EgressSettings::from_params(&ca).unwrap();
        assert_eq!(settings.table.tls.mode, SslMode::VerifyCa);
        assert_eq!(settings.table.tls.ca_file.as_deref(), Some("/ca.pem"));
        let required =
            parse(json!({"url": URL, "table": "t", "ssl_mode": "required", "ca_file": "/ca.pem"}));
        assert_eq!(field(validate(Direction::Egress, &required)), "ca_file");
        let half = parse(json!({"url": URL, "table": "t", "cert_file": "/c.pem"}));
        assert_eq!(field(validate(Direction::Egress, &half)), "key_file");
        let map = json!({"url": URL, "table": "t", "ssl_mode": "on"});
        let err = kps_connector_core::params::parse_params::<MysqlParams>(map.as_object().unwrap())
            .unwrap_err();
        assert_eq!(field(Err(err)), "ssl_mode");
        let query = parse(json!({"url": "mysql://u@h/db?ssl-mode=REQUIRED", "table": "t"}));
        let err = EgressSettings::from_params(&query).unwrap_err();
        assert!(err.to_string().contains("ssl_mode"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let map = json!({"url": URL, "table": "t", "tabel": "x"});
        let err = kps_connector_core::params::parse_params::<MysqlParams>(map.as_object().unwrap())
            .unwrap_err();
        assert_eq!(field(Err(err)), "tabel");
    }
}
