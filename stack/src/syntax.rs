//! The short forms of the Compose format, each a small pure parser: published ports
//! (`[ip:][published:]target[/protocol]` with ranges), volumes (`[source:]target[:options]`),
//! sizes (`512M`), CPU counts (`0.5`), and commands split as a shell would (`sh -c 'a b'`).

use crate::spec::Protocol;

/// A short-syntax port, before Swarm's expansion into one port per mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShortPort {
    pub host_ip: Option<String>,
    /// `(published, target)`; `None`: Swarm picks the published port.
    pub mappings: Vec<(Option<u16>, u16)>,
    pub protocol: Protocol,
}

/// Parses Docker's `[ip:][published:]target[/protocol]`, where `published` and `target`
/// may be ranges (`8000-8001:80-81`), as Docker's `nat.ParsePortSpec` then Swarm's
/// conversion do: a range of published ports for one target publishes each of them.
pub(crate) fn parse_port(spec: &str) -> Result<ShortPort, String> {
    let spec = spec.trim();
    let parts: Vec<&str> = spec.split(':').collect();
    let n = parts.len();
    let container = parts[n - 1];
    let (ip, host) = match n {
        1 => ("", None),
        2 => ("", Some(parts[0])),
        _ => (
            spec[..spec.len() - container.len() - parts[n - 2].len() - 2].trim(),
            Some(parts[n - 2]),
        ),
    };
    let (container, protocol) = match container.split_once('/') {
        None => (container, Protocol::Tcp),
        Some((port, proto)) => {
            let protocol = match proto.to_ascii_lowercase().as_str() {
                "" | "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => {
                    return Err(format!(
                        "invalid protocol {proto:?}: expected tcp, udp or sctp"
                    ))
                }
            };
            (port, protocol)
        }
    };
    let host_ip = if ip.is_empty() {
        None
    } else {
        let bare = ip.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid IP address {ip:?}"));
        }
        Some(bare.to_owned())
    };
    if container.is_empty() {
        return Err(format!("no target port in {spec:?}"));
    }
    let (t_start, t_end) =
        port_range(container).map_err(|e| format!("invalid target port {container:?}: {e}"))?;
    if t_start == 0 {
        return Err("the target port must be between 1 and 65535".to_owned());
    }
    let host = host.filter(|h| !h.is_empty());
    let mappings = match host {
        None => (t_start..=t_end).map(|t| (None, t)).collect(),
        Some(h) => {
            let (h_start, h_end) =
                port_range(h).map_err(|e| format!("invalid published port {h:?}: {e}"))?;
            let published = |p: u16| (p != 0).then_some(p);
            if t_start == t_end {
                (h_start..=h_end).map(|p| (published(p), t_start)).collect()
            } else if h_end - h_start == t_end - t_start {
                (h_start..=h_end)
                    .zip(t_start..=t_end)
                    .map(|(p, t)| (published(p), t))
                    .collect()
            } else {
                return Err(format!(
                    "the published range {h} and the target range {container} differ in size"
                ));
            }
        }
    };
    Ok(ShortPort {
        host_ip,
        mappings,
        protocol,
    })
}

fn port_range(s: &str) -> Result<(u16, u16), &'static str> {
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| "expected a port number (0-65535) or a range such as 8000-8010")
    };
    match s.split_once('-') {
        None => port(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err("the range ends before it starts");
            }
            Ok((a, b))
        }
    }
}

/// A short-syntax volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ShortVolume {
    /// Empty for an anonymous volume.
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub nocopy: bool,
    pub propagation: Option<String>,
}

impl ShortVolume {
    /// A source that is a path (`.`, `/` or `~` first) is a bind mount; otherwise a named
    /// volume (or an anonymous one when empty), as Docker decides.
    pub fn is_bind(&self) -> bool {
        self.source.starts_with(['.', '/', '~'])
    }
}

const PROPAGATIONS: &[&str] = &[
    "rprivate", "private", "rshared", "shared", "rslave", "slave",
];

/// Parses `[source:]target[:options]`, options being a comma-separated list of `ro`, `rw`,
/// `nocopy`, a bind propagation, or the SELinux and macOS options Docker accepts and
/// Swarm ignores (`z`, `Z`, `cached`, `delegated`, `consistent`).
pub(crate) fn parse_volume(spec: &str) -> Result<ShortVolume, String> {
    if spec.is_empty() {
        return Err("empty volume".to_owned());
    }
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("empty section between colons in {spec:?}"));
    }
    let mut v = ShortVolume::default();
    let options = match parts.as_slice() {
        [target] => {
            v.target = (*target).to_owned();
            None
        }
        [source, target] => {
            v.source = (*source).to_owned();
            v.target = (*target).to_owned();
            None
        }
        [source, target, options] => {
            v.source = (*source).to_owned();
            v.target = (*target).to_owned();
            Some(*options)
        }
        _ => return Err(format!("too many colons in {spec:?}")),
    };
    for option in options.into_iter().flat_map(|o| o.split(',')) {
        match option {
            "ro" => v.read_only = true,
            "rw" => v.read_only = false,
            "nocopy" => v.nocopy = true,
            "z" | "Z" | "cached" | "delegated" | "consistent" => {}
            p if PROPAGATIONS.contains(&p) => v.propagation = Some(p.to_owned()),
            other => {
                let known = PROPAGATIONS.join(", ");
                return Err(format!(
                    "unknown volume option {other:?}: expected ro, rw, nocopy or a propagation ({known})"
                ));
            }
        }
    }
    if !v.target.starts_with('/') {
        return Err(format!(
            "the target {:?} must be an absolute path in the container",
            v.target
        ));
    }
    Ok(v)
}

/// Bytes from Docker's size notation (`RAMInBytes`): a number with an optional binary unit
/// `b`, `k`, `m`, `g`, `t` or `p`, optionally followed by `i` and/or `b` (`512M`, `1.5g`,
/// `2GiB`, `100`).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_len);
    let err =
        || format!("invalid size {s:?}: expected a number of bytes or a size such as 512M or 1.5G");
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "p" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes >= 9.2e18 {
        return Err(format!("size {s:?} is too large"));
    }
    // Truncated, as Docker does.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

/// Billionths of a CPU from a decimal count (`0.5`, `2`), as Docker's `ParseCPUs`: more than
/// nine decimals is too precise.
pub(crate) fn parse_cpus(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let err = || format!("invalid CPU count {s:?}: expected a number such as 0.5 or 2");
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 9 {
        return Err(format!(
            "CPU count {s:?} is too precise: at most 9 decimals"
        ));
    }
    let whole: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| err())?
    };
    let nanos_frac: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| err())?
    };
    whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(nanos_frac))
        .ok_or_else(|| format!("CPU count {s:?} is too large"))
}

/// Splits a command string into words as a POSIX shell would (quotes, backslashes, `#`
/// comments), without expanding anything: what Docker does with `command: a string`.
pub(crate) fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err("the command ends with a lone backslash".to_owned()),
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote in the command".to_owned()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.peek() {
                            Some(&n @ ('$' | '`' | '"' | '\\')) => {
                                word.push(n);
                                chars.next();
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => word.push('\\'),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote in the command".to_owned()),
                    }
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p = |s| parse_port(s).expect(s);
        assert_eq!(p("80").mappings, [(None, 80)]);
        assert_eq!(p("8080:80").mappings, [(Some(8080), 80)]);
        assert_eq!(p("8080:80/udp").protocol, Protocol::Udp);
        assert_eq!(p("80/SCTP").protocol, Protocol::Sctp);
        assert_eq!(
            p("8000-8001:80-81").mappings,
            [(Some(8000), 80), (Some(8001), 81)]
        );
        assert_eq!(p("80-81").mappings, [(None, 80), (None, 81)]);
        assert_eq!(
            p("9000-9001:80").mappings,
            [(Some(9000), 80), (Some(9001), 80)]
        );
        let with_ip = p("127.0.0.1:8080:80");
        assert_eq!(with_ip.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(with_ip.mappings, [(Some(8080), 80)]);
        assert_eq!(p("[::1]:8080:80").host_ip.as_deref(), Some("::1"));
        assert_eq!(p("127.0.0.1::80").mappings, [(None, 80)]);
        for bad in [
            "",
            "x",
            "80/icmp",
            "0",
            "70000",
            "8000-8002:80-81",
            "81-80",
            "1.2.3:80:80",
            ":",
            "80:",
        ] {
            assert!(parse_port(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volumes() {
        let v = parse_volume("./data:/data:ro,rshared").expect("parses");
        assert_eq!(v.source, "./data");
        assert!(v.read_only && v.is_bind());
        assert_eq!(v.propagation.as_deref(), Some("rshared"));
        let named = parse_volume("db:/var/lib/db:nocopy").expect("parses");
        assert!(!named.is_bind() && named.nocopy);
        let anon = parse_volume("/cache").expect("parses");
        assert_eq!((anon.source.as_str(), anon.target.as_str()), ("", "/cache"));
        assert!(parse_volume("~/x:/x:z").expect("parses").is_bind());
        for bad in ["", "a:b:c:d", "a::b", "db:/x:bogus", "db:relative"] {
            assert!(parse_volume(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(parse_bytes("512M"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("64m"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_bytes("1.5g"), Ok(1536 * 1024 * 1024));
        assert_eq!(parse_bytes("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("10 kb"), Ok(10 * 1024));
        for bad in ["", "M", "1.2.3M", "12X", "-1", "1e9999"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus(".25"), Ok(250_000_000));
        assert_eq!(parse_cpus("0.000000001"), Ok(1));
        for bad in ["", ".", "abc", "-1", "0.0000000001", "1e3"] {
            assert!(parse_cpus(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commands_split_like_a_shell() {
        let w = |s| split_command(s).expect(s);
        assert_eq!(
            w("sh -c 'cat /a; echo; exec sleep 3600'"),
            ["sh", "-c", "cat /a; echo; exec sleep 3600"]
        );
        assert_eq!(
            w(r#"echo "a \"b\" \n" c\ d"#),
            ["echo", "a \"b\" \\n", "c d"]
        );
        assert_eq!(w("  a   b # comment\nc"), ["a", "b", "c"]);
        assert_eq!(w("a#b ''"), ["a#b", ""]);
        assert!(w("").is_empty());
        assert!(split_command("echo 'open").is_err());
        assert!(split_command("echo \"open").is_err());
        assert!(split_command("echo \\").is_err());
    }
}
