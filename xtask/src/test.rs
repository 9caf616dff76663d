//! `cargo xtask test`: every check CI runs, cheapest first, stopping at the first failing step:
//! `cargo fmt --check`, `services up` (which also installs the system packages the build needs),
//! clippy with `-D warnings`, the workspace tests (cargo nextest when installed, else cargo
//! test), the doc tests. Ends with a summary of the steps and
//! the test counts.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::host::{self, Ctx};
use crate::services;
use crate::tally::Tally;

/// The body of a step: it may add to the test counts.
type StepFn = Box<dyn Fn(&Ctx, &mut Tally) -> Result<()>>;

/// One step of the run.
struct Step {
    name: &'static str,
    /// What to run to see or fix the problem, printed when the step fails.
    hint: &'static str,
    /// Whether it runs tests (the closing `tests:` line is printed only when one ran).
    runs_tests: bool,
    run: StepFn,
}

/// Runs the steps, prints the summary, and fails naming the first failing step.
pub fn run(ctx: &Ctx) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let nextest = host::succeeds(Command::new(&cargo).args(["nextest", "--version"]));
    let steps = steps(&cargo, nextest);

    let mut tally = Tally::default();
    let mut results: Vec<(&str, Option<(bool, Duration)>)> =
        steps.iter().map(|step| (step.name, None)).collect();
    let mut failure = None;
    let mut tests_ran = false;
    for (index, step) in steps.iter().enumerate() {
        eprintln!("\n==> {}", step.name);
        tests_ran |= step.runs_tests;
        let start = Instant::now();
        let outcome = (step.run)(ctx, &mut tally);
        results[index].1 = Some((outcome.is_ok(), start.elapsed()));
        if let Err(err) = outcome {
            failure = Some((step, err));
            break;
        }
    }

    eprintln!("\n==> summary");
    for (name, result) in &results {
        let line = match result {
            Some((true, took)) => format!("ok      {name} ({:.0}s)", took.as_secs_f64()),
            Some((false, took)) => format!("FAILED  {name} ({:.0}s)", took.as_secs_f64()),
            None => format!("not run {name}"),
        };
        eprintln!("  {line}");
    }
    if let Some((step, err)) = &failure {
        eprintln!("  {err:#}");
        eprintln!("  to see or fix it: {}", step.hint);
    }
    if tests_ran {
        // The plain closing line: `tests: N passed, N failed`.
        println!("tests: {}", tally.summary());
    }
    match failure {
        Some((step, _)) => bail!("step `{}` failed", step.name),
        None => Ok(()),
    }
}

/// `cargo <args>` in the workspace root.
fn cargo(ctx: &Ctx, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(&ctx.paths.root);
    cmd
}

fn steps(program: &str, nextest: bool) -> Vec<Step> {
    let program = program.to_owned();
    let (fmt, clippy, tests, doc) = (program.clone(), program.clone(), program.clone(), program);
    vec![
        Step {
            name: "cargo fmt --check",
            hint: "the diff above; `cargo fmt -p <crate>` formats one crate",
            runs_tests: false,
            run: Box::new(move |ctx, _| {
                host::run(&mut cargo(ctx, &fmt, &["fmt", "--all", "--", "--check"]))
            }),
        },
        Step {
            // Before clippy: it also installs the system packages the build needs (libssl-dev
            // and pkg-config for the Kafka connector's TLS).
            name: "services up",
            hint: "cargo xtask services status",
            runs_tests: false,
            run: Box::new(|ctx, _| services::up(ctx, &services::select(&[])?)),
        },
        Step {
            name: "clippy -D warnings",
            hint: "cargo clippy -p <crate> --all-targets -- -D warnings",
            runs_tests: false,
            run: Box::new(move |ctx, _| {
                let args = [
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ];
                host::run(&mut cargo(ctx, &clippy, &args))
            }),
        },
        Step {
            name: if nextest {
                "tests (cargo nextest)"
            } else {
                "tests (cargo test)"
            },
            hint: "cargo test -p <crate> (the failing tests are listed above)",
            runs_tests: true,
            run: Box::new(move |ctx, tally| {
                let args: &[&str] = if nextest {
                    &[
                        "nextest",
                        "run",
                        "--workspace",
                        "--lib",
                        "--bins",
                        "--tests",
                        "--no-fail-fast",
                    ]
                } else {
                    // Not --all-targets: bench targets run their benchmark, they are not
                    // tests (clippy --all-targets still compiles them).
                    &[
                        "test",
                        "--workspace",
                        "--lib",
                        "--bins",
                        "--tests",
                        "--no-fail-fast",
                    ]
                };
                run_counted(&mut cargo(ctx, &tests, args), tally)
            }),
        },
        Step {
            name: "doc tests",
            hint: "cargo test -p <crate> --doc",
            runs_tests: true,
            run: Box::new(move |ctx, tally| {
                run_counted(
                    &mut cargo(
                        ctx,
                        &doc,
                        &["test", "--workspace", "--doc", "--no-fail-fast"],
                    ),
                    tally,
                )
            }),
        },
    ]
}

/// Runs `cmd`, passing its output through line by line, and adds the test counts it reports.
fn run_counted(cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    run_counted_into(
        cmd,
        tally,
        Box::new(std::io::stdout()),
        Box::new(std::io::stderr()),
    )
}

/// Where forwarded output goes.
type Sink = Box<dyn Write + Send>;

/// [`run_counted`] with the output sent to `out` and `err`.
fn run_counted_into(cmd: &mut Command, tally: &mut Tally, out: Sink, err: Sink) -> Result<()> {
    let line = host::display(cmd);
    eprintln!("$ {line}");
    if std::io::stderr().is_terminal() && std::env::var_os("CARGO_TERM_COLOR").is_none() {
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{line}`"))?;
    let (sender, counts) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(forward(stdout, out, sender.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(forward(stderr, err, sender.clone()));
    }
    drop(sender);
    for reader in readers {
        let _ = reader.join();
    }
    for count in counts {
        *tally += count;
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Copies `pipe` line by line to `to`, sending the counts of closing lines.
fn forward(
    pipe: impl Read + Send + 'static,
    mut to: Sink,
    counts: mpsc::Sender<Tally>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let _ = to.write_all(&line).and_then(|()| to.flush());
            if let Some(count) = Tally::from_line(&String::from_utf8_lossy(&line)) {
                let _ = counts.send(count);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_cheapest_first_and_tests_last() {
        let names: Vec<&str> = steps("cargo", true).iter().map(|step| step.name).collect();
        assert_eq!(
            names,
            [
                "cargo fmt --check",
                "services up",
                "clippy -D warnings",
                "tests (cargo nextest)",
                "doc tests"
            ]
        );
        assert_eq!(steps("cargo", false)[3].name, "tests (cargo test)");
    }

    fn quiet() -> Sink {
        Box::new(std::io::sink())
    }

    #[test]
    fn run_counted_adds_the_closing_lines() {
        let mut tally = Tally::default();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'test result: ok. 2 passed; 0 failed; 1 ignored'; echo 'test result: ok. 3 passed; 0 failed; 0 ignored' >&2"]);
        run_counted_into(&mut cmd, &mut tally, quiet(), quiet()).unwrap();
        assert_eq!(
            tally,
            Tally {
                passed: 5,
                failed: 0,
                skipped: 1
            }
        );
    }

    #[test]
    fn run_counted_fails_with_the_command() {
        let mut tally = Tally::default();
        let err = run_counted_into(Command::new("false").arg("x"), &mut tally, quiet(), quiet())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`false x` failed"), "{err}");
    }
}
