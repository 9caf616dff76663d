//! Helpers shared by the integration tests: the MariaDB they run against (127.0.0.1:3306, root
//! without a password, database `test`, or `KPS_TEST_MYSQL_URL`), unique tables, records.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use kps_connector_core::Bytes;
use kps_connector_core::testkit::{EventView, service_unavailable, unique_name};
use serde_json::Value;
use sqlx::mysql::MySqlPool;
use sqlx::mysql::MySqlPoolOptions;

/// The database URL the tests use (no password).
pub fn url() -> String {
    std::env::var("KPS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// A pool on the test database; panics naming `cargo xtask services up` when it is down.
pub async fn db() -> MySqlPool {
    let url = url();
    let connect = MySqlPoolOptions::new().max_connections(4).connect(&url);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(pool)) => pool,
        Ok(Err(e)) => service_unavailable(&format!("MariaDB at {url}"), e),
        Err(_) => service_unavailable(&format!("MariaDB at {url}"), "timed out"),
    }
}

/// A unique table name for this test.
pub fn table_name(prefix: &str) -> String {
    unique_name(prefix)
}

/// Runs one statement.
pub async fn exec(pool: &MySqlPool, sql: &str) {
    sqlx::query(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Creates `name` with `columns` (the text between the parentheses), InnoDB.
pub async fn create(pool: &MySqlPool, name: &str, columns: &str) {
    exec(
        pool,
        &format!("CREATE TABLE `{name}` ({columns}) ENGINE=InnoDB"),
    )
    .await;
}

/// Drops `name` if it exists.
pub async fn drop_table(pool: &MySqlPool, name: &str) {
    exec(pool, &format!("DROP TABLE IF EXISTS `{name}`")).await;
}

/// Inserts `n` rows `(payload)` = `row-<i>` for i in `first..first + n`, in order, with
/// multi-row statements.
pub async fn insert_payloads(pool: &MySqlPool, table: &str, first: usize, n: usize) {
    let mut i = first;
    while i < first + n {
        let chunk = (first + n - i).min(500);
        let tuples = vec!["(?)"; chunk].join(",");
        let sql = format!("INSERT INTO `{table}` (payload) VALUES {tuples}");
        let mut query = sqlx::query(&sql);
        for k in i..i + chunk {
            query = query.bind(format!("row-{k}"));
        }
        query.execute(pool).await.expect("rows inserted");
        i += chunk;
    }
}

/// Records as JSON values.
pub fn parse(records: &[Bytes]) -> Vec<Value> {
    records
        .iter()
        .map(|r| {
            serde_json::from_slice(r).unwrap_or_else(|e| panic!("record is not JSON ({e}): {r:?}"))
        })
        .collect()
}

/// The integer field `key` of every record.
pub fn ints(records: &[Value], key: &str) -> Vec<i64> {
    records
        .iter()
        .map(|r| {
            r[key]
                .as_i64()
                .unwrap_or_else(|| panic!("no integer `{key}` in {r}"))
        })
        .collect()
}

/// Waits until `check` holds, polling every 100 ms, for at most `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number of rows in `table`.
pub async fn count(pool: &MySqlPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM `{table}`"))
        .fetch_one(pool)
        .await
        .expect("count")
}

/// The alert with `id` for `stream`, if raised.
pub fn alert<'a>(events: &'a [EventView], id: &str, stream: &str) -> Option<&'a EventView> {
    events
        .iter()
        .find(|e| e.kind == "alert" && e.id == id && e.stream_id == stream)
}

/// Columns of every type the mapping covers (after an `id INT AUTO_INCREMENT PRIMARY KEY`).
pub const ALL_TYPES: &str = "id INT AUTO_INCREMENT PRIMARY KEY, \
    t_tiny TINYINT, t_bool BOOLEAN, t_small SMALLINT, t_medium MEDIUMINT, t_int INT, t_big BIGINT, \
    t_ubig BIGINT UNSIGNED, t_uint INT UNSIGNED, t_float FLOAT, t_double DOUBLE, t_dec DECIMAL(30,10), \
    t_bit BIT(12), t_year YEAR, t_date DATE, t_datetime DATETIME, t_datetime6 DATETIME(6), \
    t_ts TIMESTAMP(3) NULL DEFAULT NULL, t_time TIME, t_time6 TIME(6), t_char CHAR(3), \
    t_varchar VARCHAR(20), t_text TEXT, t_enum ENUM('a','b'), t_set SET('x','y'), t_binary BINARY(4), \
    t_varbinary VARBINARY(8), t_blob BLOB, t_json JSON";

/// A row of [`ALL_TYPES`] as SQL literals (inserted in a session whose time zone is +02:00, so
/// the TIMESTAMP literal is two hours ahead of its UTC value).
pub const ALL_TYPES_VALUES: &str = "(-128, TRUE, -32768, 8388607, -2147483648, -9223372036854775808, \
    18446744073709551615, 4294967295, 1.5, 0.1, '12345678901234567890.0123456789', b'101010101010', 2024, \
    '2024-02-29', '2024-02-29 23:59:58', '2024-02-29 23:59:58.123456', '2024-03-01 03:02:03.500', \
    '-838:59:59', '12:34:56.000007', 'ab', 'h\u{e9}llo \"quoted\"\\n', 'long text', 'b', 'x,y', \
    X'00010203', X'FF00', X'DEADBEEF', '{\"a\": [1, 2.5, null], \"b\": \"c\"}')";

/// The record [`ALL_TYPES_VALUES`] reads as (without `id`).
pub fn all_types_record() -> Value {
    serde_json::json!({
        "t_tiny": -128, "t_bool": 1, "t_small": -32768, "t_medium": 8388607, "t_int": -2147483648i64,
        "t_big": i64::MIN, "t_ubig": u64::MAX, "t_uint": 4294967295u64, "t_float": 1.5, "t_double": 0.1,
        "t_dec": "12345678901234567890.0123456789", "t_bit": 2730, "t_year": 2024,
        "t_date": "2024-02-29", "t_datetime": "2024-02-29T23:59:58Z",
        "t_datetime6": "2024-02-29T23:59:58.123456Z", "t_ts": "2024-03-01T01:02:03.500Z",
        "t_time": "-838:59:59", "t_time6": "12:34:56.000007", "t_char": "ab",
        "t_varchar": "h\u{e9}llo \"quoted\"\n", "t_text": "long text", "t_enum": "b", "t_set": "x,y",
        "t_binary": "AAECAw==", "t_varbinary": "/wA=", "t_blob": "3q2+7w==",
        "t_json": {"a": [1, 2.5, null], "b": "c"}
    })
}

/// The column names of [`ALL_TYPES`] after `id`, in table order.
pub fn all_types_columns() -> Vec<String> {
    [
        "t_tiny",
        "t_bool",
        "t_small",
        "t_medium",
        "t_int",
        "t_big",
        "t_ubig",
        "t_uint",
        "t_float",
        "t_double",
        "t_dec",
        "t_bit",
        "t_year",
        "t_date",
        "t_datetime",
        "t_datetime6",
        "t_ts",
        "t_time",
        "t_time6",
        "t_char",
        "t_varchar",
        "t_text",
        "t_enum",
        "t_set",
        "t_binary",
        "t_varbinary",
        "t_blob",
        "t_json",
    ]
    .iter()
    .map(|c| (*c).to_owned())
    .collect()
}
