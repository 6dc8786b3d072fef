//! `rswarm daemon` flags, validated into a [`DaemonConfig`] before anything is bound.

use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_PORT: u16 = 2377;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub listen_addr: SocketAddr,
    /// `IP:PORT` peers use to reach this node; `None` until given or inferred.
    pub advertise_addr: Option<SocketAddr>,
    pub hostname: String,
    pub containerd: PathBuf,
    pub containerd_namespace: String,
    pub insecure_registries: Vec<String>,
    /// Whether tasks get the node's networking (netd's agent).
    pub networking: bool,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {flag} {value:?}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// Parses `IP:PORT`, `IP` (port `default_port`), or `:PORT` (all interfaces).
pub fn parse_addr(
    flag: &'static str,
    s: &str,
    default_port: u16,
) -> Result<SocketAddr, ConfigError> {
    let err = |reason: &str| ConfigError::Invalid {
        flag,
        value: s.to_owned(),
        reason: reason.to_owned(),
    };
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| err("expected IP[:PORT]"))?;
        return Ok(SocketAddr::new(
            std::net::Ipv4Addr::UNSPECIFIED.into(),
            port,
        ));
    }
    Err(err("expected IP[:PORT]"))
}

/// The address to advertise: the one given, else the listen address if it names one IP.
pub fn advertise_for(listen: SocketAddr, given: Option<SocketAddr>) -> Option<SocketAddr> {
    match given {
        Some(a) if a.ip().is_unspecified() => None,
        Some(a) => Some(a),
        None if listen.ip().is_unspecified() => None,
        None => Some(listen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_like_docker() {
        assert_eq!(
            parse_addr("x", "10.0.0.1", 2377).unwrap().to_string(),
            "10.0.0.1:2377"
        );
        assert_eq!(parse_addr("x", "10.0.0.1:1234", 2377).unwrap().port(), 1234);
        assert_eq!(
            parse_addr("x", ":4000", 2377).unwrap().to_string(),
            "0.0.0.0:4000"
        );
        assert!(parse_addr("x", "eth0", 2377).is_err());
    }

    #[test]
    fn advertises_a_specific_address_only() {
        let any = parse_addr("x", "0.0.0.0:2377", 2377).unwrap();
        let one = parse_addr("x", "10.0.0.1:2377", 2377).unwrap();
        assert_eq!(advertise_for(any, None), None);
        assert_eq!(advertise_for(one, None), Some(one));
        assert_eq!(advertise_for(any, Some(one)), Some(one));
    }
}
