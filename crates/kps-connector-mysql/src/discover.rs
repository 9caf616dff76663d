//! Discovery: the tables of the databases in use appear in GetPayload STREAM as discovered
//! streams, and the connector's dynamic config (`url`, `password_file`, `password_env`, and the
//! TLS keys `ssl_mode`, `ca_file`, `cert_file`, `key_file`).
//!
//! The databases are those of the running streams (their `url` and password source) and the
//! `url` key of the dynamic config. A table with an AUTO_INCREMENT integer column is offered as
//! an ingress stream in mode `incrementing`; any other table as an egress stream (insert).

use std::time::Duration;

use kps_connector_core::{
    ConnectorError, ConnectorResult, Direction, DiscoveredStream, DiscoveryContext, PasswordSource,
};
use serde_json::{Map, Value, json};
use sqlx::Row;

use crate::connect::connect_within;
use crate::error::retryable;
use crate::ident::Ident;
use crate::params::{DbUrl, MysqlParams};
use crate::schema::ColumnKind;
use crate::tls::{SslMode, TlsSettings};

/// The dynamic config key naming a database to discover.
pub const URL_KEY: &str = "url";
/// How long discovery waits for one database, by default.
pub const DISCOVERY_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A database to look into.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Database {
    url: DbUrl,
    password: PasswordSource,
    tls: TlsSettings,
}

/// Lists the tables of every database in use.
pub async fn discover(
    ctx: DiscoveryContext<MysqlParams>,
    timeout: Duration,
) -> ConnectorResult<Vec<DiscoveredStream>> {
    let mut databases: Vec<Database> = Vec::new();
    if let Some(url) = ctx.config.get(URL_KEY).and_then(Value::as_str) {
        let password = PasswordSource {
            password_file: ctx
                .config
                .get("password_file")
                .and_then(Value::as_str)
                .map(str::to_owned),
            password_env: ctx
                .config
                .get("password_env")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        databases.push(Database {
            url: DbUrl::parse(URL_KEY, url)?,
            password,
            tls: config_tls(&ctx.config)?,
        });
    }
    for (_, params) in &ctx.streams {
        let Ok(url) = DbUrl::parse("url", &params.url) else {
            continue;
        };
        let Ok(tls) = TlsSettings::resolve(
            params.ssl_mode,
            params.ca_file.as_deref(),
            params.cert_file.as_deref(),
            params.key_file.as_deref(),
        ) else {
            continue;
        };
        let db = Database {
            url,
            password: PasswordSource {
                password_file: params.password_file.clone(),
                password_env: params.password_env.clone(),
            },
            tls,
        };
        if !databases.contains(&db) {
            databases.push(db);
        }
    }
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for db in &databases {
        match tables(db, timeout).await {
            Ok(streams) => found.extend(streams),
            Err(e) => failures.push(e),
        }
    }
    match failures.into_iter().next() {
        // Report a failure only when no database answered at all.
        Some(e) if found.is_empty() => Err(e),
        _ => Ok(found),
    }
}

/// The tables of one database as discovered streams.
async fn tables(db: &Database, timeout: Duration) -> ConnectorResult<Vec<DiscoveredStream>> {
    let mut conn = connect_within(&db.url, &db.password, &db.tls, timeout).await?;
    let rows = sqlx::query(
        "SELECT CAST(t.TABLE_NAME AS CHAR), \
           (SELECT CAST(c.COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS c \
             WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
               AND c.EXTRA LIKE '%auto_increment%' LIMIT 1), \
           (SELECT CAST(c.DATA_TYPE AS CHAR) FROM information_schema.COLUMNS c \
             WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
               AND c.EXTRA LIKE '%auto_increment%' LIMIT 1) \
         FROM information_schema.TABLES t \
         WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE = 'BASE TABLE' \
         ORDER BY t.TABLE_NAME",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| retryable(&format!("list the tables of {}", db.url.shown()), &e))?;
    let database = db.url.database();
    let mut streams = Vec::with_capacity(rows.len());
    for row in &rows {
        let table: String = row
            .try_get(0)
            .map_err(|e| retryable("read a table name", &e))?;
        let auto: Option<String> = row.try_get(1).unwrap_or(None);
        let auto_type: Option<String> = row.try_get(2).unwrap_or(None);
        // A table whose name is not a plain identifier cannot be a stream's `table`.
        if Ident::new(&table).is_err() {
            continue;
        }
        let mut metadata = Map::new();
        metadata.insert("url".into(), json!(db.url.as_str()));
        metadata.insert("table".into(), json!(table));
        if let Some(file) = &db.password.password_file {
            metadata.insert("password_file".into(), json!(file));
        }
        if let Some(env) = &db.password.password_env {
            metadata.insert("password_env".into(), json!(env));
        }
        if db.tls != TlsSettings::default() {
            for (field, value) in db.tls.metadata() {
                metadata.insert(field.into(), json!(value));
            }
        }
        let cursor = auto.filter(|c| Ident::new(c).is_ok()).filter(|_| {
            auto_type
                .as_deref()
                .is_some_and(|t| ColumnKind::from_types(t, "").is_integer())
        });
        let direction = match cursor {
            Some(column) => {
                metadata.insert("mode".into(), json!("incrementing"));
                metadata.insert("cursor_column".into(), json!(column));
                Direction::Ingress
            }
            None => Direction::Egress,
        };
        streams.push(DiscoveredStream {
            id: format!("{database}.{table}"),
            direction,
            transport_channel: format!(
                "mysql.{}.{}",
                subject_token(database),
                subject_token(&table)
            ),
            metadata,
        });
    }
    Ok(streams)
}

/// A NATS subject token made of the name's safe characters.
fn subject_token(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Checks the connector's own config keys.
pub fn validate_config(config: &Map<String, Value>) -> ConnectorResult<()> {
    if let Some(url) = config.get(URL_KEY) {
        let url = url
            .as_str()
            .ok_or_else(|| ConnectorError::invalid(URL_KEY, "must be a string"))?;
        DbUrl::parse(URL_KEY, url)?;
    }
    for key in ["password_file", "password_env"] {
        if config.get(key).is_some_and(|v| !v.is_string()) {
            return Err(ConnectorError::invalid(key, "must be a string"));
        }
    }
    if config.contains_key("password_file") && config.contains_key("password_env") {
        return Err(ConnectorError::invalid(
            "password_file",
            "give either password_file or password_env, not both",
        ));
    }
    config_tls(config).map(drop)
}

/// The TLS settings of the discovery database, from the config keys `ssl_mode`, `ca_file`,
/// `cert_file` and `key_file` (the stream parameters' rules).
fn config_tls(config: &Map<String, Value>) -> ConnectorResult<TlsSettings> {
    let text = |key: &str| -> ConnectorResult<Option<&str>> {
        match config.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.as_str())),
            Some(_) => Err(ConnectorError::invalid(key, "must be a string")),
        }
    };
    let mode = match text("ssl_mode")? {
        None => None,
        Some(mode) => Some(serde_json::from_value::<SslMode>(json!(mode)).map_err(|_| {
            ConnectorError::invalid(
                "ssl_mode",
                "must be disabled, preferred, required, verify_ca or verify_identity",
            )
        })?),
    };
    TlsSettings::resolve(
        mode,
        text("ca_file")?,
        text("cert_file")?,
        text("key_file")?,
    )
}

/// The dynamic config's JSON Schema: the core's keys and the discovery database.
pub fn config_schema() -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "log_level": {
                "type": "string",
                "description": "tracing filter applied at runtime, e.g. info or kps_connector_mysql=debug"
            },
            "dead_letter_subject": {
                "type": "string",
                "description": "NATS subject for refused records; {stream} is replaced by the stream id"
            },
            "url": {
                "type": "string",
                "description": "a database whose tables are discovered: mysql://user@host:port/database (no password)"
            },
            "password_file": {
                "type": "string",
                "description": "a file holding the password of the discovery database"
            },
            "password_env": {
                "type": "string",
                "description": "an environment variable holding the password of the discovery database"
            },
            "ssl_mode": {
                "type": "string",
                "enum": ["disabled", "preferred", "required", "verify_ca", "verify_identity"],
                "description": "TLS to the discovery database, as the streams' ssl_mode (default verify_ca with ca_file, else preferred)"
            },
            "ca_file": {
                "type": "string",
                "description": "a PEM file of the CA certificates of the discovery database (verify_ca, verify_identity)"
            },
            "cert_file": {
                "type": "string",
                "description": "a PEM client certificate for the discovery database; needs key_file"
            },
            "key_file": {
                "type": "string",
                "description": "the PEM private key of cert_file"
            }
        },
        "additionalProperties": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        let ok = json!({"url": "mysql://root@127.0.0.1:3306/test", "log_level": "info"});
        assert!(validate_config(ok.as_object().unwrap()).is_ok());
        let pw = json!({"url": "mysql://root:pw@127.0.0.1:3306/test"});
        assert!(validate_config(pw.as_object().unwrap()).is_err());
        let both = json!({"password_file": "a", "password_env": "b"});
        assert!(validate_config(both.as_object().unwrap()).is_err());
        let tls = json!({"url": "mysql://root@127.0.0.1:3306/test", "ca_file": "/ca.pem"});
        assert_eq!(
            config_tls(tls.as_object().unwrap()).unwrap().mode,
            SslMode::VerifyCa
        );
        for (bad, key) in [
            (json!({"ssl_mode": "on"}), "ssl_mode"),
            (json!({"ssl_mode": 1}), "ssl_mode"),
            (
                json!({"ssl_mode": "required", "ca_file": "/ca.pem"}),
                "ca_file",
            ),
            (json!({"cert_file": "/c.pem"}), "key_file"),
        ] {
            match validate_config(bad.as_object().unwrap()) {
                Err(ConnectorError::InvalidParameter { field, .. }) => assert_eq!(field, key),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(subject_token("a$b.c"), "a_b_c");
    }
}
