//! `streams`, `apply`, `delete`.

use std::collections::HashMap;
use std::path::PathBuf;

use kps_connector_core::proto;

use super::print_json;
use crate::connection::Connection;
use crate::document::{declarations, read_documents};
use crate::output::{EventRow, colour_enabled, state_label, table};
use crate::{CliError, CliResult};

#[derive(serde::Serialize)]
struct StreamRow {
    id: String,
    direction: String,
    channel: String,
    subscribed: bool,
    discovered: bool,
    health: Option<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
}

fn direction_name(direction: i32) -> String {
    proto::StreamDirection::try_from(direction)
        .map(|d| {
            d.as_str_name()
                .trim_start_matches("STREAM_DIRECTION_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("DIRECTION({direction})"))
}

/// `kpsctl streams`.
pub async fn list(connection: &mut Connection, json: bool) -> CliResult<()> {
    let streams = connection.streams().await?;
    let health: HashMap<String, (i32, String)> = connection
        .events()
        .await?
        .into_iter()
        .filter_map(|e| match e.object {
            Some(proto::event_payload::Object::Status(s)) => {
                Some((s.stream_id.clone(), (s.state, s.message)))
            }
            _ => None,
        })
        .collect();
    let rows: Vec<StreamRow> = streams
        .into_iter()
        .map(|s| StreamRow {
            health: health
                .get(&s.id)
                .map(|(state, _)| state_label(*state, false)),
            id: s.id,
            direction: direction_name(s.direction),
            channel: s.transport_channel,
            subscribed: s.subscribed,
            discovered: s.discovered,
            metadata: kps_connector_core::grpc::convert::struct_to_json(s.metadata.as_ref()),
        })
        .collect();
    if json {
        print_json(&rows);
        return Ok(());
    }
    let colour = colour_enabled();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.direction.clone(),
                if r.channel.is_empty() {
                    "-".to_owned()
                } else {
                    r.channel.clone()
                },
                yes_no(r.subscribed),
                yes_no(r.discovered),
                health
                    .get(&r.id)
                    .map(|(state, _)| state_label(*state, colour))
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID",
                "DIRECTION",
                "CHANNEL",
                "SUBSCRIBED",
                "DISCOVERED",
                "HEALTH"
            ],
            &cells
        )
    );
    Ok(())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// `kpsctl apply -f ...`: the documents are the whole desired set.
pub async fn apply(connection: &mut Connection, files: &[PathBuf], json: bool) -> CliResult<()> {
    let documents = read_documents(files)?;
    let streams = declarations(&documents)?;
    connection.apply(&streams).await?;
    let ids: Vec<&str> = streams.iter().map(|s| s.id.as_str()).collect();
    if json {
        print_json(&serde_json::json!({"applied": ids}));
    } else {
        println!("applied {} stream(s): {}", ids.len(), ids.join(", "));
    }
    Ok(())
}

/// `kpsctl delete STREAM`: the subscribed set without it.
pub async fn delete(connection: &mut Connection, stream: &str, json: bool) -> CliResult<()> {
    let subscribed: Vec<proto::Stream> = connection
        .streams()
        .await?
        .into_iter()
        .filter(|s| s.subscribed)
        .collect();
    if !subscribed.iter().any(|s| s.id == stream) {
        return Err(CliError::Input(format!(
            "stream `{stream}` is not subscribed"
        )));
    }
    let rest: Vec<proto::Stream> = subscribed.into_iter().filter(|s| s.id != stream).collect();
    let remaining = rest.len();
    connection.set_streams(rest).await?;
    if json {
        print_json(&serde_json::json!({"deleted": stream, "remaining": remaining}));
    } else {
        println!("deleted stream {stream} ({remaining} remaining)");
    }
    Ok(())
}

/// The events of `connection` as rows, newest first.
pub async fn event_rows(connection: &mut Connection) -> CliResult<Vec<EventRow>> {
    let mut rows: Vec<EventRow> = connection
        .events()
        .await?
        .into_iter()
        .filter_map(EventRow::from_proto)
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.time()));
    Ok(rows)
}
