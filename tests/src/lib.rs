//! Multi-process integration tests for rswarm: a harness that drives the real `rswarm`
//! binary as separate processes talking over loopback (127.0.0.1) only.
//!
//! - [`rswarm_bin`] finds the binary under test: `RSWARM_BIN`, else
//!   `<workspace>/target/debug/rswarm`, built once with `cargo build -p rswarm` when missing.
//!   The suite runs whatever binary is there, so rebuild it after changing the product
//!   (`cargo build -p rswarm && cargo nextest run -p rswarm-tests`).
//! - [`Daemon`] is one `rswarm daemon` with its own temporary data dir, socket, log file and
//!   cluster port `127.0.0.1:PORT`; it is killed (and reaped) on drop, and prints the tail of
//!   its log when dropped during a panic, so a failing test shows what each daemon said.
//!   Client commands go to it with [`Daemon::run`], [`Daemon::ok`] and [`Daemon::json`].
//! - [`wait_for`] polls a condition until a deadline and panics with the last unmet reason
//!   (no fixed sleeps); [`hold_for`] checks that a condition stays true for a while.
//! - [`Checks`] collects the failures of many cases (e.g. every kind of bad input) so that
//!   one run reports them all; [`refusal_problems`] is the "clean refusal" contract: non-zero
//!   exit, exactly one non-empty line on stderr, no panic, no Rust debug dump.
//! - [`grpc`] calls the control API and the cluster port directly, for what the CLI cannot
//!   express (a stale object version, a removed node's certificate).
//! - [`nodes`] reads `node ls --format json` rows.
//! - [`services`] runs a three-node cluster on containerd (a namespace per node, removed on
//!   drop) and reads `service ps --format json` rows and `ctr` listings.
//!
//! Every test owns a disjoint range of cluster ports, so that nextest can run them all in
//! parallel: `bad_input` uses 25100-25199, `cluster` 25200-25299, `services` 25300-25399,
//! `networks` 25400-25499 and `stacks` 25500-25599, ten ports per test.

mod binary;
mod checks;
mod daemon;
pub mod grpc;
pub mod nodes;
pub mod services;
mod wait;

pub use binary::rswarm_bin;
pub use checks::{refusal_problems, Checks};
pub use daemon::{client, Daemon, HEARTBEAT};
pub use wait::{hold_for, wait_for};
