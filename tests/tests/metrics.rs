//! `rswarm daemon --metrics-addr`: Prometheus metrics with Docker's swarm metric names.
//!
//! Ports: 25700-25709.

use rswarm_tests::{wait_for, Daemon};
use std::time::Duration;

/// `GET /metrics` on 127.0.0.1:`port`, the body if it answered 200.
fn scrape(port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.to_owned());
    }
    Ok(body.to_owned())
}

#[test]
fn metrics_are_served_with_swarm_names() {
    let m1 = Daemon::start_with(
        "m1",
        25700,
        "rswtest-metrics-m1",
        &["--metrics-addr", "127.0.0.1:25709"],
    );
    m1.init();
    let body = wait_for(Duration::from_secs(10), || {
        let b = scrape(25709)?;
        b.contains("swarm_manager_nodes{state=\"ready\"} 1")
            .then_some(b.clone())
            .ok_or(b)
    });
    for want in [
        "swarm_node_manager 1",
        "swarm_manager_leader 1",
        "swarm_manager_services 0",
        "swarm_node_info{node_id=",
    ] {
        assert!(body.contains(want), "{want} missing from:\n{body}");
    }
    // A bad address is refused at start, in one line.
    let out = m1.run(&["daemon", "--metrics-addr", "nonsense:port"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metrics-addr") && err.lines().count() == 1,
        "{err}"
    );
}
