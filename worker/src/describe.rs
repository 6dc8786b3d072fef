//! What a node says about itself when it registers.
use rswarm_proto::pb;

/// Describes this machine: the hostname given, the OS and architecture, CPUs and memory,
/// and whether it can run tasks.
pub fn describe(hostname: &str, has_runtime: bool) -> pb::NodeDescription {
    pb::NodeDescription {
        hostname: hostname.to_owned(),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes: memory_bytes().unwrap_or(0),
        engine_version: env!("CARGO_PKG_VERSION").to_owned(),
        runtime_unavailable: !has_runtime,
    }
}

/// `MemTotal` from /proc/meminfo.
fn memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_memtotal() {
        let t = "MemTotal:       24567890 kB\nMemFree: 1 kB\n";
        assert_eq!(super::parse_meminfo(t), Some(24567890 * 1024));
        assert_eq!(super::parse_meminfo("garbage"), None);
    }

    #[test]
    fn describes_this_machine() {
        let d = super::describe("h1", true);
        assert_eq!(d.hostname, "h1");
        assert!(d.cpus >= 1);
        assert_eq!(d.os, std::env::consts::OS);
    }
}
