//! Collecting the failures of many cases, and the "clean refusal" contract of the CLI.

use std::fmt::Write as _;
use std::process::Output;

/// What is wrong with `out` as a refusal: it must exit non-zero and write exactly one
/// non-empty line on stderr, with no panic and no Rust debug dump of a gRPC status
/// (`Status {`, `{ code:`). Empty when it is a clean refusal.
pub fn refusal_problems(out: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut problems = Vec::new();
    if out.status.success() {
        problems.push("exited 0, expected a non-zero exit status".to_owned());
    }
    if lines.len() != 1 {
        problems.push(format!(
            "expected exactly one non-empty line on stderr, got {}",
            lines.len()
        ));
    }
    for bad in ["panicked", "Status {", "{ code:", "RUST_BACKTRACE"] {
        if stderr.contains(bad) {
            problems.push(format!("stderr contains {bad:?}"));
        }
    }
    problems
}

fn describe(out: &Output) -> String {
    format!(
        "exit: {}\n      stdout: {:?}\n      stderr: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Failures collected across cases; [`Checks::finish`] panics with all of them, so one run
/// shows every broken case instead of the first.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a failure of `case` unless `ok`.
    pub fn that(&mut self, case: &str, ok: bool, why: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(format!("{case}: {}", why()));
        }
    }

    /// Records a failure unless `r` is `Ok`.
    pub fn result(&mut self, case: &str, r: Result<(), String>) {
        if let Err(why) = r {
            self.failures.push(format!("{case}: {why}"));
        }
    }

    /// Checks that `out` is a clean refusal (see [`refusal_problems`]) whose stderr line
    /// contains each of `expect` (case-insensitive). Returns the stderr line.
    pub fn refused(&mut self, case: &str, out: &Output, expect: &[&str]) -> String {
        let mut problems = refusal_problems(out);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let lower = stderr.to_lowercase();
        for e in expect {
            if !lower.contains(&e.to_lowercase()) {
                problems.push(format!("stderr does not mention {e:?}"));
            }
        }
        // Shown with --no-capture, and for a failing test.
        eprintln!("{case}: exit {} stderr {:?}", out.status, stderr.trim_end());
        if !problems.is_empty() {
            self.failures.push(format!(
                "{case}: {}\n      {}",
                problems.join("; "),
                describe(out)
            ));
        }
        stderr.trim().to_owned()
    }

    /// Panics with every recorded failure, if any.
    #[track_caller]
    pub fn finish(self) {
        if self.failures.is_empty() {
            return;
        }
        let mut msg = format!("{} check(s) failed:\n", self.failures.len());
        for f in &self.failures {
            let _ = writeln!(msg, "  - {f}");
        }
        panic!("{msg}");
    }
}
