//! Discovery: the tables of the databases in use appear in GetPayload STREAM as discovered
//! streams, and the connector's dynamic config (`url`, `password_file`, `password_env`).
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

/// The dynamic config key naming a database to discover.
pub const URL_KEY: &str = "url";
/// How long discovery waits for one database, by default.
pub const DISCOVERY_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A database to look into.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Database {
    url: DbUrl,
    password: PasswordSource,
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
        });
    }
    for (_, params) in &ctx.streams {
        let Ok(url) = DbUrl::parse("url", &params.url) else {
            continue;
        };
        let db = Database {
            url,
            password: PasswordSource {
                password_file: params.password_file.clone(),
                password_env: params.password_env.clone(),
            },
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
    let mut conn = connect_within(&db.url, &db.password, timeout).await?;
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
    Ok(())
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
        assert_eq!(subject_token("a$b.c"), "a_b_c");
    }
}
