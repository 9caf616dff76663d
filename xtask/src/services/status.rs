//! `services status`: a table of service, port, state and who started it.

use anyhow::Result;

use super::Service;
use crate::host::Ctx;
use crate::probe::Health;
use crate::state::{Record, State};

/// `services status`: the table.
pub fn run(ctx: &Ctx, services: &[Service]) -> Result<()> {
    let state = State::load(&ctx.paths.services_state())?;
    let mut rows = vec![[
        "SERVICE".to_owned(),
        "PORT".to_owned(),
        "STATE".to_owned(),
        "STARTED BY".to_owned(),
    ]];
    for svc in services {
        let health = svc.health();
        let by = started_by(&health, state.get(svc.name));
        let health = match health {
            Health::Up => "up".to_owned(),
            Health::Down => "down".to_owned(),
            Health::Unfit(why) => format!("unfit: {why}"),
        };
        rows.push([svc.name.to_owned(), svc.port.to_string(), health, by]);
    }
    print!("{}", format_table(&rows));
    println!(
        "(xtask remembers what it started in {})",
        ctx.paths.services_state().display()
    );
    Ok(())
}

/// Who started a service: `xtask` when the process `up` started still runs, `machine` when
/// something else answers, `-` when nothing does.
pub(super) fn started_by(health: &Health, record: Option<&Record>) -> String {
    let ours = record.and_then(|record| match record.process {
        Some(id) if id.is_alive() => Some(format!("xtask (pid {})", id.pid)),
        None if *health != Health::Down => Some("xtask".to_owned()),
        _ => None,
    });
    match (ours, health) {
        (Some(ours), _) => ours,
        (None, Health::Down) => "-".to_owned(),
        (None, _) => "machine".to_owned(),
    }
}

/// Left-aligned columns separated by two spaces.
fn format_table(rows: &[[String; 4]]) -> String {
    let mut widths = [0usize; 4];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::{self, ProcessId};

    #[test]
    fn started_by_tells_xtask_from_the_machine() {
        let me = std::process::id();
        let alive = ProcessId {
            pid: me,
            start_time: procfs::start_time(me).unwrap(),
        };
        let gone = ProcessId {
            start_time: alive.start_time + 1,
            ..alive
        };
        let record = |process| Record {
            service: "nats".into(),
            process,
        };
        assert_eq!(
            started_by(&Health::Up, Some(&record(Some(alive)))),
            format!("xtask (pid {me})")
        );
        assert_eq!(
            started_by(&Health::Up, Some(&record(Some(gone)))),
            "machine"
        );
        assert_eq!(started_by(&Health::Up, Some(&record(None))), "xtask");
        assert_eq!(started_by(&Health::Up, None), "machine");
        assert_eq!(started_by(&Health::Down, None), "-");
        assert_eq!(started_by(&Health::Down, Some(&record(None))), "-");
    }

    #[test]
    fn table_columns_line_up() {
        let rows = [
            [
                "SERVICE".to_owned(),
                "PORT".to_owned(),
                "STATE".to_owned(),
                "STARTED BY".to_owned(),
            ],
            [
                "nats".to_owned(),
                "4222".to_owned(),
                "up".to_owned(),
                "machine".to_owned(),
            ],
        ];
        assert_eq!(
            format_table(&rows),
            "SERVICE  PORT  STATE  STARTED BY\nnats     4222  up     machine\n"
        );
    }
}
