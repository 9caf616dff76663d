//! `events [--watch]`.

use std::collections::HashMap;
use std::time::Duration;

use super::print_json;
use super::streams::event_rows;
use crate::CliResult;
use crate::connection::Connection;
use crate::output::{EVENT_HEADER, colour_enabled, table};

/// `kpsctl events`: the current events newest first; with `watch`, then every change.
pub async fn show(
    connection: &mut Connection,
    watch: bool,
    interval_ms: u64,
    json: bool,
) -> CliResult<()> {
    let colour = colour_enabled();
    let rows = event_rows(connection).await?;
    if json {
        print_json(&rows);
    } else {
        print!(
            "{}",
            table(
                EVENT_HEADER,
                &rows.iter().map(|r| r.cells(colour)).collect::<Vec<_>>()
            )
        );
    }
    if !watch {
        return Ok(());
    }
    let mut seen: HashMap<(String, String), String> = rows
        .into_iter()
        .map(|r| ((r.id.clone(), r.stream_id.clone()), r.created_at.clone()))
        .collect();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(interval_ms.max(100))) => {}
        }
        let mut rows = event_rows(connection).await?;
        rows.reverse(); // oldest change first, as a log
        for row in rows {
            let key = (row.id.clone(), row.stream_id.clone());
            if seen.get(&key) == Some(&row.created_at) {
                continue;
            }
            seen.insert(key, row.created_at.clone());
            if json {
                match serde_json::to_string(&row) {
                    Ok(line) => println!("{line}"),
                    Err(e) => eprintln!("cannot print JSON: {e}"),
                }
            } else {
                println!("{}", row.cells(colour).join("  "));
            }
        }
    }
}
