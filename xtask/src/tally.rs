//! Counting tests from the closing lines of cargo test (`test result: ok. 3 passed; 0 failed; ...`)
//! and cargo nextest (`Summary [ 1.2s] 3 tests run: 3 passed, 1 skipped`).

use std::ops::AddAssign;

/// Test counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed or timed out.
    pub failed: u64,
    /// Tests skipped or ignored.
    pub skipped: u64,
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

impl Tally {
    /// The counts in a closing line of either runner, `None` for any other line.
    pub fn from_line(line: &str) -> Option<Tally> {
        let line = strip_ansi(line);
        let line = line.trim();
        let counts = if let Some(rest) = line.strip_prefix("test result:") {
            rest
        } else if line.starts_with("Summary [") {
            line.split_once(" run:")?.1
        } else {
            return None;
        };
        let words: Vec<&str> = counts
            .split(|c: char| c.is_whitespace() || ",;.()".contains(c))
            .filter(|word| !word.is_empty())
            .collect();
        let mut tally = Tally::default();
        for pair in words.windows(2) {
            let Ok(n) = pair[0].parse::<u64>() else {
                continue;
            };
            match pair[1] {
                "passed" => tally.passed += n,
                "failed" | "timed" => tally.failed += n,
                "skipped" | "ignored" => tally.skipped += n,
                _ => {}
            }
        }
        Some(tally)
    }

    /// `N passed, N failed` (`, N skipped` when some were).
    pub fn summary(&self) -> String {
        let mut text = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            text.push_str(&format!(", {} skipped", self.skipped));
        }
        text
    }
}

/// `line` without ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_test_result_lines() {
        let line = "test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.52s";
        assert_eq!(
            Tally::from_line(line),
            Some(Tally {
                passed: 12,
                failed: 0,
                skipped: 3
            })
        );
        let line = "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!(
            Tally::from_line(line),
            Some(Tally {
                passed: 1,
                failed: 2,
                skipped: 0
            })
        );
    }

    #[test]
    fn nextest_summary_lines() {
        let line = "     Summary [   3.456s] 57 tests run: 57 passed (2 slow), 4 skipped";
        assert_eq!(
            Tally::from_line(line),
            Some(Tally {
                passed: 57,
                failed: 0,
                skipped: 4
            })
        );
        let line =
            "     Summary [  60.001s] 10 tests run: 7 passed, 2 failed, 1 timed out, 0 skipped";
        assert_eq!(
            Tally::from_line(line),
            Some(Tally {
                passed: 7,
                failed: 3,
                skipped: 0
            })
        );
        let line = "\u{1b}[32;1m     Summary\u{1b}[0m [   0.010s] \u{1b}[1m1\u{1b}[0m test run: \u{1b}[1m1\u{1b}[0m \u{1b}[32;1mpassed\u{1b}[0m, \u{1b}[1m0\u{1b}[0m \u{1b}[33;1mskipped\u{1b}[0m";
        assert_eq!(
            Tally::from_line(line),
            Some(Tally {
                passed: 1,
                failed: 0,
                skipped: 0
            })
        );
    }

    #[test]
    fn other_lines_are_not_counted() {
        assert_eq!(
            Tally::from_line("        PASS [   0.003s] xtask cli::tests::unknown_verb_is_refused"),
            None
        );
        assert_eq!(Tally::from_line("running 3 tests"), None);
        assert_eq!(Tally::from_line("test foo::bar ... ok"), None);
    }

    #[test]
    fn summary_is_the_plain_closing_line() {
        let mut tally = Tally {
            passed: 3,
            failed: 0,
            skipped: 0,
        };
        assert_eq!(tally.summary(), "3 passed, 0 failed");
        tally += Tally {
            passed: 1,
            failed: 1,
            skipped: 2,
        };
        assert_eq!(tally.summary(), "4 passed, 1 failed, 2 skipped");
    }
}
