//! The image formats a pull reads: OCI and Docker v2 schema 2 manifests, indexes (manifest
//! lists) and image configs, plus the digests that tie them together.

use rswarm_proto::model::HealthCheck;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// What the manifest request accepts, most specific first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor, as in manifests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image manifest (one platform).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image index / manifest list (several platforms).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// Either kind of document a manifest endpoint serves.
#[derive(Debug, Clone)]
pub enum ManifestDoc {
    Manifest(Manifest),
    Index(Index),
}

impl ManifestDoc {
    /// Reads a manifest document. The media type comes from the response's Content-Type or
    /// a descriptor, falling back to the document's own `mediaType` and then its shape (OCI
    /// manifests need not carry a media type).
    pub fn parse(media_type: &str, body: &[u8]) -> Result<ManifestDoc, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            schema_version: Option<i64>,
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(body).map_err(|e| format!("malformed manifest: {e}"))?;
        if probe.schema_version == Some(1) {
            return Err("manifest schema 1 is not supported".into());
        }
        let declared = probe.media_type.as_deref().unwrap_or("");
        let mt = if media_type.is_empty() || media_type == "application/json" {
            declared
        } else {
            media_type
        };
        let is_index = match mt {
            OCI_INDEX | DOCKER_LIST => true,
            OCI_MANIFEST | DOCKER_MANIFEST => false,
            "" => probe.manifests.is_some(),
            other => return Err(format!("unsupported manifest media type {other:?}")),
        };
        if is_index {
            serde_json::from_slice(body)
                .map(ManifestDoc::Index)
                .map_err(|e| format!("malformed image index: {e}"))
        } else {
            serde_json::from_slice(body)
                .map(ManifestDoc::Manifest)
                .map_err(|e| format!("malformed image manifest: {e}"))
        }
    }
}

/// This host's platform in OCI's words.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    ("linux", arch)
}

/// Picks the manifest for `os`/`arch` from an index (arm64 prefers variant v8 or none).
pub fn select_platform<'a>(index: &'a Index, os: &str, arch: &str) -> Option<&'a Descriptor> {
    let candidates = index.manifests.iter().filter(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    });
    let mut best: Option<&Descriptor> = None;
    for d in candidates {
        let variant = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        match variant {
            None | Some("v8") => return Some(d),
            Some(_) if best.is_none() => best = Some(d),
            Some(_) => {}
        }
    }
    best
}

/// The image config file (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ImageConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The runtime defaults an image carries (Docker's `ContainerConfig` subset that matters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub healthcheck: Option<ImageHealthcheck>,
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
}

/// Docker's `HEALTHCHECK`, durations in nanoseconds; zero means "the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageHealthcheck {
    #[serde(default)]
    pub test: Option<Vec<String>>,
    #[serde(default)]
    pub interval: Option<i64>,
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub start_period: Option<i64>,
    #[serde(default)]
    pub retries: Option<i64>,
}

impl ImageHealthcheck {
    /// The model's health check, with Docker's defaults for unset values; `None` when the
    /// image has no test or disables checks (`NONE`).
    pub fn to_model(&self) -> Option<HealthCheck> {
        let test = self.test.clone().unwrap_or_default();
        if test.is_empty() || test.first().is_some_and(|t| t == "NONE") {
            return None;
        }
        let d = HealthCheck::default();
        let dur = |ns: Option<i64>, default: Duration| match ns {
            Some(n) if n > 0 => Duration::from_nanos(n.unsigned_abs()),
            _ => default,
        };
        Some(HealthCheck {
            test,
            interval: dur(self.interval, d.interval),
            timeout: dur(self.timeout, d.timeout),
            start_period: dur(self.start_period, d.start_period),
            retries: match self.retries {
                Some(r) if r > 0 => u32::try_from(r).unwrap_or(u32::MAX),
                _ => d.retries,
            },
        })
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The chain ids of a layer stack (OCI image spec): chain(0) = diff(0),
/// chain(n) = sha256(chain(n-1) + " " + diff(n)). Snapshots are named by them.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_digest(b"sha256:aaaa sha256:bbbb"));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn parses_manifests_and_indexes() {
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:1","size":1},"layers":[]}"#;
        assert!(matches!(
            ManifestDoc::parse("", m),
            Ok(ManifestDoc::Manifest(_))
        ));
        assert!(matches!(
            ManifestDoc::parse(DOCKER_MANIFEST, m),
            Ok(ManifestDoc::Manifest(_))
        ));
        let i = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"m","digest":"sha256:arm","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
            {"mediaType":"m","digest":"sha256:amd","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let Ok(ManifestDoc::Index(idx)) = ManifestDoc::parse(OCI_INDEX, i) else {
            panic!("index not parsed")
        };
        assert_eq!(
            select_platform(&idx, "linux", "amd64").map(|d| d.digest.as_str()),
            Some("sha256:amd")
        );
        assert_eq!(
            select_platform(&idx, "linux", "arm64").map(|d| d.digest.as_str()),
            Some("sha256:arm")
        );
        assert!(select_platform(&idx, "linux", "s390x").is_none());
        assert!(ManifestDoc::parse("text/html", m).is_err());
        assert!(ManifestDoc::parse("", br#"{"schemaVersion":1}"#).is_err());
    }

    #[test]
    fn image_healthcheck_defaults() {
        let h = ImageHealthcheck {
            test: Some(vec!["CMD-SHELL".into(), "true".into()]),
            interval: Some(2_000_000_000),
            ..Default::default()
        };
        let m = h.to_model().expect("a check");
        assert_eq!(m.interval, Duration::from_secs(2));
        assert_eq!(m.timeout, Duration::from_secs(30));
        assert_eq!(m.retries, 3);
        let none = ImageHealthcheck {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        };
        assert_eq!(none.to_model(), None);
    }
}
