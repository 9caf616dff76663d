//! `config get`, `config set`.

use super::print_json;
use crate::connection::Connection;
use crate::{CliError, CliResult};

/// `kpsctl config get`.
pub async fn get(connection: &mut Connection, json: bool) -> CliResult<()> {
    let config = connection.config().await?;
    if json {
        print_json(&config);
    } else if config.is_empty() {
        println!("(no dynamic config)");
    } else {
        for (key, value) in &config {
            println!("{key}={value}");
        }
    }
    Ok(())
}

/// Parses `KEY=VALUE` pairs: VALUE is JSON when it parses, else a string.
pub fn parse_pairs(pairs: &[String]) -> CliResult<serde_json::Map<String, serde_json::Value>> {
    pairs
        .iter()
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| CliError::Input(format!("`{pair}` is not KEY=VALUE")))?;
            let value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
            Ok((key.to_owned(), value))
        })
        .collect()
}

/// `kpsctl config set KEY=VALUE...`.
pub async fn set(connection: &mut Connection, pairs: &[String], json: bool) -> CliResult<()> {
    let update = parse_pairs(pairs)?;
    connection.set_config(&update).await?;
    if json {
        print_json(&connection.config().await?);
    } else {
        println!(
            "config updated: {}",
            update.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_or_strings() {
        let map = parse_pairs(&[
            "a=1".into(),
            "b=info".into(),
            "c=null".into(),
            "d={\"x\":true}".into(),
        ])
        .unwrap();
        assert_eq!(map["a"], 1);
        assert_eq!(map["b"], "info");
        assert!(map["c"].is_null());
        assert_eq!(map["d"]["x"], true);
        assert!(parse_pairs(&["novalue".into()]).is_err());
        assert!(parse_pairs(&["=x".into()]).is_err());
    }
}
