//! Waiting on conditions instead of sleeping.
//!
//! Real time is right here: the conditions depend on other processes, which a paused clock
//! cannot move.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(100);

/// Polls `check` every 100 ms until it returns `Ok`, and returns that value. When `timeout`
/// passes first, panics with the last unmet condition (the last `Err`), e.g.
/// `timed out after 20s: 3/4 nodes ready; w1 is down`.
#[track_caller]
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?}: {why}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Checks that `check` keeps returning `Ok` for `period`, polling every 100 ms; panics with
/// the first `Err`. For "this must not happen" conditions, such as a removed node coming back.
#[track_caller]
pub fn hold_for(period: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        if let Err(why) = check() {
            panic!("after {:?} (of {period:?}): {why}", start.elapsed());
        }
        if start.elapsed() >= period {
            return;
        }
        std::thread::sleep(POLL);
    }
}
