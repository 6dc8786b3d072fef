//! Health checks with Docker's semantics: the check runs every `interval` inside the
//! container; `retries` consecutive failures make it unhealthy, except that failures within
//! `start_period` of the start do not count until the first success.

use crate::exec::Controller;
use rswarm_proto::model::{ContainerSpec, HealthCheck};

/// The check that applies: the service's, else the image's; `["NONE"]` disables both.
pub fn effective(spec: &ContainerSpec, image: Option<HealthCheck>) -> Option<HealthCheck> {
    let chosen = match &spec.healthcheck {
        Some(h) if !h.test.is_empty() => Some(h.clone()),
        _ => image,
    }?;
    match chosen.test.first().map(String::as_str) {
        None | Some("NONE") => None,
        _ => Some(chosen),
    }
}

/// The command to exec for a check: `CMD-SHELL x` runs `/bin/sh -c x`, `CMD a b` runs `a b`.
pub fn command(hc: &HealthCheck) -> Vec<String> {
    match hc.test.split_first() {
        Some((kind, rest)) if kind == "CMD-SHELL" => {
            vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
        }
        Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
        // A bare command list, as some images write it.
        _ => hc.test.clone(),
    }
}

/// Runs one check; a timeout or an exec error counts as a failure.
pub async fn probe(ctl: &mut dyn Controller, hc: &HealthCheck) -> bool {
    matches!(ctl.exec(&command(hc), hc.timeout).await, Ok(out) if out.exit_code == 0)
}

/// Consecutive failures, as Docker counts them.
#[derive(Debug, Default)]
pub struct Streak {
    failures: u32,
    seen_healthy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Still starting or failing fewer than `retries` times in a row.
    Undecided,
    Unhealthy,
}

impl Streak {
    /// Records one probe `ok`, made `since_start` after the container started.
    pub fn record(
        &mut self,
        hc: &HealthCheck,
        ok: bool,
        since_start: std::time::Duration,
    ) -> Verdict {
        if ok {
            self.failures = 0;
            self.seen_healthy = true;
            return Verdict::Healthy;
        }
        if !self.seen_healthy && since_start < hc.start_period {
            return Verdict::Undecided;
        }
        self.failures += 1;
        if self.failures >= hc.retries.max(1) {
            Verdict::Unhealthy
        } else {
            Verdict::Undecided
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hc(retries: u32, start_period: Duration) -> HealthCheck {
        HealthCheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            retries,
            start_period,
            ..Default::default()
        }
    }

    #[test]
    fn retries_consecutive_failures_make_it_unhealthy() {
        let h = hc(2, Duration::ZERO);
        let mut s = Streak::default();
        assert_eq!(
            s.record(&h, false, Duration::from_secs(1)),
            Verdict::Undecided
        );
        assert_eq!(s.record(&h, true, Duration::from_secs(2)), Verdict::Healthy);
        assert_eq!(
            s.record(&h, false, Duration::from_secs(3)),
            Verdict::Undecided
        );
        assert_eq!(
            s.record(&h, false, Duration::from_secs(4)),
            Verdict::Unhealthy
        );
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let h = hc(1, Duration::from_secs(5));
        let mut s = Streak::default();
        assert_eq!(
            s.record(&h, false, Duration::from_secs(1)),
            Verdict::Undecided
        );
        assert_eq!(
            s.record(&h, false, Duration::from_secs(4)),
            Verdict::Undecided
        );
        assert_eq!(
            s.record(&h, false, Duration::from_secs(6)),
            Verdict::Unhealthy
        );
    }

    #[test]
    fn the_spec_overrides_the_image_and_none_disables() {
        let mut spec = ContainerSpec::default();
        let image = hc(3, Duration::ZERO);
        assert_eq!(effective(&spec, Some(image.clone())), Some(image.clone()));
        spec.healthcheck = Some(HealthCheck {
            test: vec!["NONE".into()],
            ..Default::default()
        });
        assert_eq!(effective(&spec, Some(image)), None);
        assert_eq!(
            command(&hc(1, Duration::ZERO)),
            vec!["/bin/sh", "-c", "true"]
        );
    }
}
