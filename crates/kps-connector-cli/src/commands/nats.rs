//! `tail` and `publish`: the pipeline side of NATS channels.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kps_connector_core::transport::wire;

use super::print_json;
use crate::cli::{PublishArgs, RecordFormat};
use crate::{CliError, CliResult};

async fn connect(url: &str) -> CliResult<async_nats::Client> {
    let nats_error = |reason: String| CliError::Nats {
        url: url.to_owned(),
        reason,
    };
    tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url))
        .await
        .map_err(|_| nats_error("no answer within 5s".to_owned()))?
        .map_err(|e| nats_error(e.to_string()))
}

/// `kpsctl tail SUBJECT`: decodes TransportMessages and prints each record; the rate goes to
/// standard error once a second.
pub async fn tail(
    url: &str,
    subject: &str,
    format: RecordFormat,
    count: Option<u64>,
    seconds: Option<u64>,
) -> CliResult<()> {
    let client = connect(url).await?;
    let mut subscriber =
        client
            .subscribe(subject.to_owned())
            .await
            .map_err(|e| CliError::Nats {
                url: url.to_owned(),
                reason: format!("subscribe to {subject}: {e}"),
            })?;
    let _ = client.flush().await;
    eprintln!("tailing {subject} on {url}");
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut stdout = std::io::stdout().lock();
    let (mut total, mut window, mut window_start) = (0u64, 0u64, Instant::now());
    loop {
        let wait = deadline.map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1))
        });
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let message = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            m = tokio::time::timeout(wait, subscriber.next()) => m,
        };
        if window_start.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "{:.0} records/s",
                window as f64 / window_start.elapsed().as_secs_f64()
            );
            (window, window_start) = (0, Instant::now());
        }
        let Ok(Some(message)) = message else { continue };
        let (timestamp, records) = match wire::decode(message.payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                eprintln!("skipped an undecodable message on {}: {e}", message.subject);
                continue;
            }
        };
        for record in records {
            print_record(&mut stdout, format, timestamp, &record);
            total += 1;
            window += 1;
            if count.is_some_and(|c| total >= c) {
                let _ = stdout.flush();
                return Ok(());
            }
        }
        let _ = stdout.flush();
    }
    Ok(())
}

fn print_record(out: &mut impl Write, format: RecordFormat, timestamp: i64, record: &[u8]) {
    let _ = match format {
        RecordFormat::Text => writeln!(out, "{}", String::from_utf8_lossy(record)),
        RecordFormat::Hex => writeln!(
            out,
            "{}",
            record
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        RecordFormat::Json => {
            let body = match std::str::from_utf8(record) {
                Ok(text) => {
                    serde_json::json!({"timestamp": timestamp, "size": record.len(), "text": text})
                }
                Err(_) => {
                    serde_json::json!({"timestamp": timestamp, "size": record.len(), "hex": record.iter().map(|b| format!("{b:02x}")).collect::<String>()})
                }
            };
            writeln!(out, "{body}")
        }
    };
}

/// `kpsctl publish SUBJECT`: records from a file, standard input, or generated.
pub async fn publish(url: &str, args: &PublishArgs, json: bool) -> CliResult<()> {
    let records = read_records(args)?;
    let client = connect(url).await?;
    let started = Instant::now();
    let batch = usize::try_from(args.batch).unwrap_or(usize::MAX);
    let mut messages = 0u64;
    let bytes: usize = records.iter().map(Bytes::len).sum();
    for chunk in records.chunks(batch) {
        client
            .publish(args.subject.clone(), wire::encode(wire::now_nanos(), chunk))
            .await
            .map_err(|e| CliError::Nats {
                url: url.to_owned(),
                reason: format!("publish to {}: {e}", args.subject),
            })?;
        messages += 1;
    }
    client.flush().await.map_err(|e| CliError::Nats {
        url: url.to_owned(),
        reason: format!("flush: {e}"),
    })?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let rate = records.len() as f64 / secs;
    if json {
        print_json(&serde_json::json!({
            "subject": args.subject, "records": records.len(), "messages": messages, "bytes": bytes,
            "seconds": secs, "records_per_second": rate, "megabytes_per_second": bytes as f64 / secs / 1e6,
        }));
    } else {
        println!(
            "published {} records in {messages} messages to {} in {secs:.3}s ({rate:.0} records/s, {:.2} MB/s)",
            records.len(),
            args.subject,
            bytes as f64 / secs / 1e6
        );
    }
    Ok(())
}

fn read_records(args: &PublishArgs) -> CliResult<Vec<Bytes>> {
    if let Some(count) = args.count {
        return Ok((0..count).map(|i| generated_record(i, args.size)).collect());
    }
    let lines: Vec<Bytes> = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
                context: format!("read {}", path.display()),
                source,
            })?;
            text.lines().map(|l| Bytes::from(l.to_owned())).collect()
        }
        None => std::io::stdin()
            .lock()
            .lines()
            .map(|l| {
                l.map(Bytes::from).map_err(|source| CliError::Io {
                    context: "read standard input".to_owned(),
                    source,
                })
            })
            .collect::<CliResult<_>>()?,
    };
    Ok(lines)
}

/// Record `i` of `size` bytes: its number, padded with dots.
fn generated_record(i: u64, size: usize) -> Bytes {
    let mut text = format!("record-{i:010}");
    text.truncate(size);
    text.extend(std::iter::repeat_n('.', size.saturating_sub(text.len())));
    Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_records_have_the_size_asked() {
        assert_eq!(generated_record(7, 20).len(), 20);
        assert_eq!(&generated_record(7, 20)[..17], b"record-0000000007");
        assert_eq!(generated_record(7, 3).as_ref(), b"rec");
    }
}
