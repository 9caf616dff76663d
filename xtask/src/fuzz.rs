//! `cargo xtask fuzz [--seconds N] [--target NAME]...`: the cargo-fuzz targets of `fuzz/`, built
//! once with `cargo fuzz build` (installed when missing; `RUSTC_BOOTSTRAP=1`, the toolchain is
//! stable), then each fuzzer binary run for N seconds (default 20) over its kept corpus
//! `fuzz/corpus/<target>/`. Fails when a target crashed (or hung), naming the input file.
//!
//! The kept corpus is only read: what the fuzzer finds goes to `<target dir>/fuzz/corpus/<target>/`
//! (kept between local runs), crashes to `fuzz/artifacts/<target>/`, libFuzzer's output to
//! `<target dir>/fuzz/logs/<target>.log`. The build (`<target dir>/fuzz`) has no sanitizer (see
//! [`SANITIZER`]) and keeps debug assertions, so overflows panic.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::host::{self, Ctx};

/// How long each target runs when `--seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 20;

/// The cargo-fuzz release installed when `cargo fuzz` is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// No sanitizer: the fuzzed code has no `unsafe` (the workspace denies it), so AddressSanitizer
/// would only slow the build and every execution; a Rust bug shows as a panic, which libFuzzer
/// reports without it. (The C library under the Kafka connector is not instrumented either way.)
const SANITIZER: &str = "none";

/// A libFuzzer input that takes longer than this many seconds is reported as a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// The options of `cargo xtask fuzz`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Seconds per target (default [`DEFAULT_SECONDS`]).
    pub seconds: Option<u64>,
    /// The targets to run (empty: every one).
    pub targets: Vec<String>,
}

/// What one target's run came to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// Inputs executed.
    executions: Option<u64>,
    /// Executions per second, on average.
    per_second: Option<u64>,
    /// Inputs that reached new code (written to the scratch corpus).
    new_inputs: Option<u64>,
    /// The crash, hang or out-of-memory inputs libFuzzer wrote.
    crashes: Vec<PathBuf>,
}

/// Builds every target once, then runs the selected ones in turn.
pub fn run(ctx: &Ctx, options: &Options) -> Result<()> {
    let fuzz_dir = ctx.paths.root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    let selected = select(&all, &options.targets)?;
    let seconds = options.seconds.unwrap_or(DEFAULT_SECONDS);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    ensure_cargo_fuzz(&cargo)?;

    let target_dir = ctx.paths.target.join("fuzz");
    let build = Instant::now();
    host::run(&mut cargo_fuzz_build(ctx, &cargo, &target_dir))
        .context("building the fuzz targets")?;
    eprintln!(
        "built the fuzz targets in {:.0}s",
        build.elapsed().as_secs_f64()
    );

    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for target in &selected {
        let scratch = target_dir.join("corpus").join(target);
        let kept = fuzz_dir.join("corpus").join(target);
        let log = target_dir.join("logs").join(format!("{target}.log"));
        let artifacts = fuzz_dir.join("artifacts").join(target);
        for dir in [&scratch, &kept, &artifacts] {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if let Some(parent) = log.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // The binary `build` made, run directly: `cargo fuzz run` would rebuild first whenever
        // a source changed meanwhile. The first corpus folder receives what the fuzzer finds;
        // the kept one is only read.
        let mut cmd = Command::new(binary(&target_dir, target)?);
        cmd.current_dir(&ctx.paths.root)
            .args([
                format!("-artifact_prefix={}/", artifacts.display()),
                format!("-max_total_time={seconds}"),
                format!("-timeout={INPUT_TIMEOUT_SECONDS}"),
                "-print_final_stats=1".to_owned(),
            ])
            .arg(&scratch)
            .arg(&kept);
        eprintln!("$ {}", host::display(&cmd));
        eprintln!(
            "  fuzzing {target} for {seconds}s (output: {})",
            log.display()
        );
        let started = Instant::now();
        let ok = run_logged(&mut cmd, &log)?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        let outcome = parse_output(&text);
        let line = summary_line(target, &outcome, started.elapsed().as_secs_f64());
        eprintln!("  {line}");
        lines.push(line);
        if !ok || !outcome.crashes.is_empty() {
            eprintln!("  {}", host::log_tail(&log));
            failures.push((target.clone(), outcome.crashes));
        }
    }

    eprintln!("\n==> fuzz summary ({seconds}s per target)");
    for line in &lines {
        eprintln!("  {line}");
    }
    if failures.is_empty() {
        return Ok(());
    }
    for (target, crashes) in &failures {
        if crashes.is_empty() {
            eprintln!("  {target}: failed without writing an input; see its log above");
        }
        for crash in crashes {
            eprintln!("  {target} crashed on {}", crash.display());
            eprintln!(
                "    reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer {SANITIZER} -a --target-dir {} {target} {}",
                target_dir.display(),
                crash.display()
            );
        }
    }
    let names: Vec<&str> = failures.iter().map(|(t, _)| t.as_str()).collect();
    bail!("fuzz target(s) failed: {}", names.join(", "))
}

/// The targets of `fuzz/`: one `fuzz_targets/<name>.rs` each, sorted.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

/// The targets asked for (every one when none is named), refusing an unknown name.
fn select(all: &[String], asked: &[String]) -> Result<Vec<String>> {
    if asked.is_empty() {
        return Ok(all.to_vec());
    }
    for name in asked {
        if !all.contains(name) {
            bail!(
                "no fuzz target `{name}`: the targets are {}",
                all.join(", ")
            );
        }
    }
    Ok(asked.to_vec())
}

/// The fuzzer binary of `target` that `cargo fuzz build` wrote:
/// `<target dir>/<host triple>/release/<target>`.
fn binary(target_dir: &Path, target: &str) -> Result<PathBuf> {
    let entries = fs::read_dir(target_dir)
        .with_context(|| format!("cannot read {}", target_dir.display()))?;
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("release").join(target))
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "`cargo fuzz build` wrote no {target} under {}",
                target_dir.display()
            )
        })
}

/// Installs cargo-fuzz when `cargo fuzz` does not answer (idempotent).
fn ensure_cargo_fuzz(cargo: &str) -> Result<()> {
    if host::succeeds(Command::new(cargo).args(["fuzz", "--version"])) {
        return Ok(());
    }
    host::run(Command::new(cargo).args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .context("installing cargo-fuzz")
}

/// `cargo fuzz build` with the options of `cargo xtask fuzz` (the reproduce command it prints
/// uses the same), in the workspace root.
fn cargo_fuzz_build(ctx: &Ctx, cargo: &str, target_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ctx.paths.root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args([
            "fuzz",
            "build",
            "--sanitizer",
            SANITIZER,
            "--debug-assertions",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    cmd
}

/// Runs `cmd` with its output in `log`; tells whether it succeeded.
fn run_logged(cmd: &mut Command, log: &Path) -> Result<bool> {
    let line = host::display(cmd);
    let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let stderr = file
        .try_clone()
        .with_context(|| format!("cannot open {}", log.display()))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    Ok(status.success())
}

/// Reads libFuzzer's final stats (`stat::name: value`) and the inputs it wrote
/// (`Test unit written to <path>`) from its output.
fn parse_output(text: &str) -> Outcome {
    let mut outcome = Outcome::default();
    for line in text.lines() {
        if let Some(path) = line
            .split_once("Test unit written to ")
            .map(|(_, path)| path.trim())
        {
            outcome.crashes.push(PathBuf::from(path));
        }
        let Some((name, value)) = line
            .strip_prefix("stat::")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let value = value.trim().parse().ok();
        match name {
            "number_of_executed_units" => outcome.executions = value,
            "average_exec_per_sec" => outcome.per_second = value,
            "new_units_added" => outcome.new_inputs = value,
            _ => {}
        }
    }
    outcome
}

/// One line of the summary.
fn summary_line(target: &str, outcome: &Outcome, seconds: f64) -> String {
    let number = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let verdict = if outcome.crashes.is_empty() {
        "ok"
    } else {
        "CRASHED"
    };
    format!(
        "{verdict:<7} {target:<26} {:>10} execs {:>7} execs/s {:>5} new inputs ({seconds:.0}s)",
        number(outcome.executions),
        number(outcome.per_second),
        number(outcome.new_inputs),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_and_crash_files_are_read() {
        let text = "\
INFO: Running with entropic power schedule (0xFF, 100).
#2\tINITED cov: 120 ft: 130 corp: 1/1b exec/s: 0 rss: 30Mb
thread '<unnamed>' panicked at src/lib.rs:3:5:
boom
==1234== ERROR: libFuzzer: deadly signal
artifact_prefix='/w/fuzz/artifacts/params_file/'; Test unit written to /w/fuzz/artifacts/params_file/crash-da39a3ee
stat::number_of_executed_units: 81234
stat::average_exec_per_sec:     4061
stat::new_units_added:          57
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              61
";
        let outcome = parse_output(text);
        assert_eq!(
            outcome,
            Outcome {
                executions: Some(81234),
                per_second: Some(4061),
                new_inputs: Some(57),
                crashes: vec![PathBuf::from(
                    "/w/fuzz/artifacts/params_file/crash-da39a3ee"
                )],
            }
        );
        let line = summary_line("params_file", &outcome, 20.2);
        assert!(line.starts_with("CRASHED params_file"), "{line}");
        assert!(line.contains("4061 execs/s"), "{line}");
        assert_eq!(parse_output("no stats"), Outcome::default());
        assert!(summary_line("x", &Outcome::default(), 1.0).starts_with("ok "));
    }

    #[test]
    fn the_workspace_targets_are_found_and_selected() {
        let fuzz_dir = crate::paths::Paths::detect().root.join("fuzz");
        let all = targets(&fuzz_dir).unwrap();
        for name in [
            "transport_message_decode",
            "set_payload_validation",
            "params_file",
        ] {
            assert!(all.iter().any(|t| t == name), "{name} in {all:?}");
        }
        assert_eq!(select(&all, &[]).unwrap(), all);
        assert_eq!(
            select(&all, &["params_file".to_owned()]).unwrap(),
            ["params_file"]
        );
        let err = select(&all, &["params_nope".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no fuzz target `params_nope`"), "{err}");
        assert!(err.contains("transport_message_decode"), "{err}");
    }

    #[test]
    fn every_target_has_a_kept_corpus() {
        let fuzz_dir = crate::paths::Paths::detect().root.join("fuzz");
        for target in targets(&fuzz_dir).unwrap() {
            let corpus = fuzz_dir.join("corpus").join(&target);
            let files = fs::read_dir(&corpus).map_or(0, |entries| entries.count());
            assert!(
                (1..=60).contains(&files),
                "{}: {files} files (keep 1 to about 50)",
                corpus.display()
            );
        }
    }
}
