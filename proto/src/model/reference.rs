//! Image references as Docker reads them: `[host[:port]/]path[:tag][@sha256:hex]`.
//!
//! Here, not in the worker, because the managers pin service images to digests and the CLI
//! shows them without: all three read references the same way.

use std::fmt;

/// Docker Hub's name in references, and the host that serves its registry API.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry as named in the reference (`docker.io` for Docker Hub).
    pub domain: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// `None` only when a digest is given without a tag.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `image` with Docker's defaults: no registry means Docker Hub (with `library/`
    /// for single-component names), no tag and no digest means `latest`.
    pub fn parse(image: &str) -> Result<Reference, String> {
        if image.is_empty() {
            return Err("empty reference".into());
        }
        let (name_tag, digest) = match image.split_once('@') {
            Some((n, d)) => {
                validate_digest(d)?;
                (n, Some(d.to_string()))
            }
            None => (image, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(name_tag[at + 1..].to_string()))
            }
            None => (name_tag, None),
        };
        if let Some(t) = &tag {
            validate_tag(t)?;
        }
        let (domain, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("invalid registry {domain:?}"));
        }
        validate_repository(&repository)?;
        let repository = if domain == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(Reference {
            domain,
            repository,
            tag,
            digest,
        })
    }

    /// The host (and port) that serves the registry's HTTP API.
    pub fn api_host(&self) -> &str {
        if self.domain == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.domain
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

/// The full name, as containerd's image store records it (`docker.io/library/busybox:latest`).
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `sha256:<64 lowercase hex>`, the only digest form images are pinned with.
pub fn validate_digest(d: &str) -> Result<(), String> {
    match d.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!("invalid digest {d:?} (only sha256 is supported)")),
    }
}

/// `image` pinned to `digest`, as Swarm records a resolved service image: the reference as
/// written, with `:latest` added when it names no tag (`busybox` ->
/// `busybox:latest@sha256:...`). An image that already has a digest is returned as it is.
pub fn pin(image: &str, digest: &str) -> Result<String, String> {
    let r = Reference::parse(image)?;
    if r.digest.is_some() {
        return Ok(image.to_string());
    }
    validate_digest(digest)?;
    let tag = if has_tag(image) { "" } else { ":latest" };
    Ok(format!("{image}{tag}@{digest}"))
}

/// Whether `image` as written names a tag (a `:` after the last `/`, before any digest).
fn has_tag(image: &str) -> bool {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let last = name.rfind('/').map_or(0, |i| i + 1);
    name[last..].contains(':')
}

/// `image` without its digest when it also has a tag (`reg:5000/busybox:latest@sha256:...`
/// -> `reg:5000/busybox:latest`), as `docker service ls` and `ps` show images; anything
/// else (no digest, a digest alone, not a reference) as it is.
pub fn without_digest(image: &str) -> &str {
    match image.split_once('@') {
        Some((name, _)) if has_tag(name) && Reference::parse(image).is_ok() => name,
        _ => image,
    }
}

/// Whether two references name the same repository and tag once normalised, digests
/// aside (`busybox` and `docker.io/library/busybox:latest@sha256:...` do).
pub fn same_name_and_tag(a: &str, b: &str) -> bool {
    match (Reference::parse(a), Reference::parse(b)) {
        // `parse` already made `x` mean `x:latest`; `x@sha256:...` alone has no tag.
        (Ok(a), Ok(b)) => a.domain == b.domain && a.repository == b.repository && a.tag == b.tag,
        _ => a == b,
    }
}

fn validate_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {t:?}"))
    }
}

fn validate_repository(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid repository name {r:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn p(s: &str) -> Reference {
        match Reference::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("user/app:1.2").to_string(), "docker.io/user/app:1.2");
    }

    #[test]
    fn host_port_tag_and_digest() {
        let r = p("127.0.0.1:5055/busybox:latest");
        assert_eq!(
            (r.domain.as_str(), r.repository.as_str()),
            ("127.0.0.1:5055", "busybox")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.manifest_reference(), "latest");

        let r = p("localhost:5000/a/b");
        assert_eq!(
            (r.domain.as_str(), r.repository.as_str()),
            ("localhost:5000", "a/b")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));

        let r = p(&format!("reg.example:443/x/y@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("reg.example:443/x/y@{D}"));

        let r = p(&format!("reg.example/x:v1@{D}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.manifest_reference(), D);
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "x:",
            "x@sha256:12",
            "host:5000/",
            "a b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn pins_and_unpins_as_swarm_records_and_docker_shows() {
        assert_eq!(
            pin("127.0.0.1:5055/busybox:latest", D).as_deref(),
            Ok(format!("127.0.0.1:5055/busybox:latest@{D}").as_str())
        );
        assert_eq!(
            pin("busybox", D).as_deref(),
            Ok(format!("busybox:latest@{D}").as_str())
        );
        assert_eq!(
            pin("localhost:5000/a/b", D).as_deref(),
            Ok(format!("localhost:5000/a/b:latest@{D}").as_str())
        );
        // Already pinned: kept as given, whatever the registry says now.
        let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let given = format!("busybox:1@{D}");
        assert_eq!(pin(&given, other).as_deref(), Ok(given.as_str()));
        assert!(pin("busybox", "sha256:12").is_err());
        assert!(pin("Not A Reference", D).is_err());

        assert_eq!(
            without_digest(&format!("reg:5000/busybox:latest@{D}")),
            "reg:5000/busybox:latest"
        );
        assert_eq!(
            without_digest("reg:5000/busybox:latest"),
            "reg:5000/busybox:latest"
        );
        let bare = format!("reg:5000/busybox@{D}");
        assert_eq!(
            without_digest(&bare),
            bare,
            "a digest alone is all there is"
        );

        assert!(same_name_and_tag("busybox", &format!("busybox:latest@{D}")));
        assert!(same_name_and_tag(
            "docker.io/library/busybox:latest",
            "busybox"
        ));
        assert!(!same_name_and_tag("busybox:1", "busybox:2"));
        assert!(!same_name_and_tag("reg:5000/busybox", "busybox"));
        assert!(!same_name_and_tag(&bare, "reg:5000/busybox:latest"));
    }
}
