//! Reading the rows of `node ls --format json` (`id`, `hostname`, `role`, `availability`,
//! `state`, `leader`, `addr`, `labels`). Functions return `Err` with what they saw, for
//! [`crate::wait_for`] to report.

use serde_json::Value;

fn str_field<'a>(row: &'a Value, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A one-line summary of the rows, e.g. `m1(manager,ready,leader) w1(worker,down)`.
pub fn summary(rows: &[Value]) -> String {
    rows.iter()
        .map(|r| {
            let leader = if r["leader"] == Value::Bool(true) {
                ",leader"
            } else {
                ""
            };
            format!(
                "{}({},{}{leader})",
                str_field(r, "hostname"),
                str_field(r, "role"),
                str_field(r, "state")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The row of the node called `hostname`.
pub fn row<'a>(rows: &'a [Value], hostname: &str) -> Result<&'a Value, String> {
    let found: Vec<&Value> = rows
        .iter()
        .filter(|r| str_field(r, "hostname") == hostname)
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("no node {hostname}: {}", summary(rows))),
        _ => Err(format!(
            "{} nodes named {hostname}: {}",
            found.len(),
            summary(rows)
        )),
    }
}

/// A string field of the node called `hostname`.
pub fn field(rows: &[Value], hostname: &str, key: &str) -> Result<String, String> {
    Ok(str_field(row(rows, hostname)?, key).to_owned())
}

/// Whether a node called `hostname` is listed.
pub fn has(rows: &[Value], hostname: &str) -> bool {
    rows.iter().any(|r| str_field(r, "hostname") == hostname)
}

/// The value of label `key` on `hostname` ("" when it has none).
pub fn label(rows: &[Value], hostname: &str, key: &str) -> Result<String, String> {
    Ok(row(rows, hostname)?["labels"]
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned())
}

/// The hostname of the single leader; `Err` when there is none or more than one.
pub fn leader(rows: &[Value]) -> Result<String, String> {
    let leaders: Vec<&str> = rows
        .iter()
        .filter(|r| r["leader"] == Value::Bool(true))
        .map(|r| str_field(r, "hostname"))
        .collect();
    match leaders.as_slice() {
        [one] => Ok((*one).to_owned()),
        _ => Err(format!(
            "expected exactly one leader, got {}: {}",
            leaders.len(),
            summary(rows)
        )),
    }
}

/// `Ok` when at least `n` nodes are ready.
pub fn expect_ready(rows: &[Value], n: usize) -> Result<(), String> {
    let ready = rows
        .iter()
        .filter(|r| str_field(r, "state") == "ready")
        .count();
    if ready >= n {
        Ok(())
    } else {
        Err(format!("{ready}/{n} nodes ready: {}", summary(rows)))
    }
}

/// `Ok` when `hostname`'s `key` is `want`.
pub fn expect_field(rows: &[Value], hostname: &str, key: &str, want: &str) -> Result<(), String> {
    let got = field(rows, hostname, key)?;
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{hostname} {key} is {got:?}, want {want:?}: {}",
            summary(rows)
        ))
    }
}

/// What a command must not change, one line per node sorted by id: id, hostname, role,
/// availability and labels (state, leader and addr change by themselves and are left out).
pub fn stable_view(rows: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                str_field(r, "id"),
                str_field(r, "hostname"),
                str_field(r, "role"),
                str_field(r, "availability"),
                r["labels"]
            )
        })
        .collect();
    v.sort();
    v
}
