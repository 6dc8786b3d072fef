//! Output helpers: aligned tables like Docker's, and JSON arrays for `--format json`.

use comfy_table::{presets, ContentArrangement, Table};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Prints rows under `header`, aligned with at least three spaces between columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    for line in t.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

pub fn json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// How long ago, as Docker's tables say it (go-units `HumanDuration`, lower-cased):
/// "less than a second", "5 seconds", "about a minute", "3 hours", "2 days".
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    let mins = secs / 60;
    // Hours are rounded, as Docker's.
    let hours = (ms + 1_800_000) / 3_600_000;
    match () {
        _ if secs < 1 => "less than a second".into(),
        _ if secs == 1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if mins == 1 => "about a minute".into(),
        _ if mins < 60 => format!("{mins} minutes"),
        _ if hours == 1 => "about an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", ms / 3_600_000 / 24 / 365),
    }
}

/// A task's state with its age, as `docker service ps` shows it ("Running 5 seconds ago");
/// the state alone when the time is unknown.
pub fn state_since(state: &str, timestamp_ms: u64, now_ms: u64) -> String {
    let mut c = state.chars();
    let state = match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    };
    if timestamp_ms == 0 {
        return state;
    }
    format!(
        "{state} {} ago",
        human_duration(now_ms.saturating_sub(timestamp_ms))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_dockers() {
        let s = 1000;
        let cases = [
            (0, "less than a second"),
            (999, "less than a second"),
            (s, "1 second"),
            (59 * s, "59 seconds"),
            (60 * s, "about a minute"),
            (119 * s, "about a minute"),
            (120 * s, "2 minutes"),
            (59 * 60 * s, "59 minutes"),
            (60 * 60 * s, "about an hour"),
            (5 * 3600 * s, "5 hours"),
            (3 * 24 * 3600 * s, "3 days"),
            (20 * 24 * 3600 * s, "2 weeks"),
            (90 * 24 * 3600 * s, "3 months"),
            (800 * 24 * 3600 * s, "2 years"),
        ];
        for (ms, want) in cases {
            assert_eq!(human_duration(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn a_state_with_its_age() {
        assert_eq!(
            state_since("running", 1_000, 6_500),
            "Running 5 seconds ago"
        );
        assert_eq!(state_since("pending", 0, 6_500), "Pending");
        // A clock behind the node's does not make it negative.
        assert_eq!(
            state_since("running", 9_000, 6_500),
            "Running less than a second ago"
        );
    }
}
