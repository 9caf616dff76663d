//! The machine xtask runs on: privileges (root, or `sudo` when not root) and running commands,
//! each echoed before it runs.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use crate::paths::Paths;

/// Everything a verb needs: the host and the paths.
#[derive(Debug)]
pub struct Ctx {
    /// Privileges and command running.
    pub host: Host,
    /// The workspace folders.
    pub paths: Paths,
}

impl Ctx {
    /// Looks at the machine and the workspace.
    pub fn detect() -> Result<Ctx> {
        Ok(Ctx {
            host: Host::detect(),
            paths: Paths::detect(),
        })
    }
}

/// How privileged commands run here.
#[derive(Debug, Clone)]
pub struct Host {
    root: bool,
    sudo: Option<PathBuf>,
    interactive: bool,
}

impl Host {
    /// Root needs nothing; otherwise `sudo` (with `-n` when there is no terminal to ask on).
    pub fn detect() -> Host {
        let root = effective_uid() == Some(0);
        let sudo = if root { None } else { which("sudo") };
        Host {
            root,
            sudo,
            interactive: std::io::stdin().is_terminal(),
        }
    }

    /// A command that runs `argv` as root (directly, or through `sudo`), with `env` set.
    pub fn privileged<S: AsRef<OsStr>>(&self, argv: &[S], env: &[(&str, &str)]) -> Command {
        let (program, args) = match argv.split_first() {
            Some((program, args)) => (program.as_ref(), args),
            None => (OsStr::new("true"), &[] as &[S]),
        };
        match (&self.sudo, self.root) {
            (Some(sudo), false) => {
                let mut cmd = Command::new(sudo);
                if !self.interactive {
                    cmd.arg("-n");
                }
                if !env.is_empty() {
                    // sudo resets the environment: pass the variables through `env`.
                    cmd.arg("env");
                    cmd.args(env.iter().map(|(key, value)| format!("{key}={value}")));
                }
                cmd.arg(program).args(args.iter().map(AsRef::as_ref));
                cmd
            }
            _ => {
                let mut cmd = Command::new(program);
                cmd.args(args.iter().map(AsRef::as_ref))
                    .envs(env.iter().copied());
                cmd
            }
        }
    }
}

/// The effective user id, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_effective_uid(&status)
}

/// Reads the effective uid (second number of the `Uid:` line) of a `/proc/<pid>/status` text.
fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The first executable called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The command line of `cmd`, for echoing and error messages.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![quote(cmd.get_program())];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Echoes and runs `cmd` with the terminal's output; fails naming the command when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Echoes and runs `cmd` with its output appended to `log` (daemons started from here must not
/// keep our stdout open); on failure the error carries the log's last lines.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let line = display(cmd);
    eprintln!("$ {line}");
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let stderr = file
        .try_clone()
        .with_context(|| format!("cannot open {}", log.display()))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status}); {}", log_tail(log));
    }
    Ok(())
}

/// The last lines of a log file, for error messages.
pub fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n  ");
    if tail.is_empty() {
        format!("no output (log: {})", log.display())
    } else {
        format!("last lines of {}:\n  {tail}", log.display())
    }
}

/// Runs `cmd` quietly (no echo, no stdin) and returns what it printed.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let line = display(cmd);
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}`"))
}

/// Runs `cmd` with `input` on its standard input and returns its standard output; fails naming
/// the command (and its standard error) when it fails.
pub fn pipe(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;

    let line = display(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{line}`"))?;
    let out = std::thread::scope(|scope| {
        let mut stdin = child.stdin.take();
        // Write on another thread: the command may fill its output pipe before reading it all.
        let writer = scope.spawn(move || match stdin.as_mut() {
            Some(stdin) => stdin.write_all(input),
            None => Ok(()),
        });
        let out = child.wait_with_output();
        (writer.join(), out)
    });
    let (written, out) = out;
    let out = out.with_context(|| format!("cannot wait for `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    match written {
        Ok(Ok(())) => Ok(out.stdout),
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot write to `{line}`")),
        Err(_) => bail!("cannot write to `{line}`"),
    }
}

/// Runs `cmd` quietly and tells whether it succeeded (a missing program counts as failure).
pub fn succeeds(cmd: &mut Command) -> bool {
    output(cmd).is_ok_and(|out| out.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_number() {
        let status = "Name:\tcat\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name:\tcat\n"), None);
        assert!(
            effective_uid().is_some(),
            "/proc/self/status has a Uid line"
        );
    }

    #[test]
    fn privileged_commands_use_sudo_only_when_not_root() {
        let root = Host {
            root: true,
            sudo: None,
            interactive: false,
        };
        let cmd = root.privileged(
            &["apt-get", "update"],
            &[("DEBIAN_FRONTEND", "noninteractive")],
        );
        assert_eq!(display(&cmd), "apt-get update");
        assert!(cmd.get_envs().any(|(key, _)| key == "DEBIAN_FRONTEND"));

        let user = Host {
            root: false,
            sudo: Some("/usr/bin/sudo".into()),
            interactive: false,
        };
        let cmd = user.privileged(
            &["apt-get", "update"],
            &[("DEBIAN_FRONTEND", "noninteractive")],
        );
        assert_eq!(
            display(&cmd),
            "/usr/bin/sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update"
        );

        let at_terminal = Host {
            interactive: true,
            ..user
        };
        assert_eq!(
            display(&at_terminal.privileged(&["kill", "1"], &[])),
            "/usr/bin/sudo kill 1"
        );
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("mariadb");
        cmd.args(["-e", "SELECT 1", "it's"]);
        assert_eq!(display(&cmd), r"mariadb -e 'SELECT 1' 'it'\''s'");
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("no-such-program-xtask").is_none());
    }

    #[test]
    fn pipe_passes_large_input_through() {
        let input = vec![b'a'; 1 << 20];
        assert_eq!(pipe(&mut Command::new("cat"), &input).unwrap(), input);
        let err = pipe(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            b"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("oops"), "{err}");
    }

    #[test]
    fn run_names_the_failing_command() {
        let err = run(&mut Command::new("false")).unwrap_err().to_string();
        assert!(err.starts_with("`false` failed"), "{err}");
        assert!(succeeds(&mut Command::new("true")));
        assert!(!succeeds(&mut Command::new("no-such-program-xtask")));
    }
}
