//! Resolving an image's tag to its digest at the registry, for the managers, which pin
//! service images (`repo:tag@sha256:...`) as Swarm's do. The digest is the one a pull of the
//! tag would then verify: the sha256 of the top manifest as served (for a multi-platform
//! image, its index).

use super::image::sha256_digest;
use super::reference::Reference;
use super::registry::Registry;

/// The registry client, for digests only. Speaks plain HTTP to `insecure_registries`, as
/// the executor does.
pub struct ImageDigests {
    registry: Registry,
}

impl ImageDigests {
    pub fn new(insecure_registries: Vec<String>) -> ImageDigests {
        ImageDigests {
            registry: Registry::new(insecure_registries),
        }
    }

    /// `sha256:<hex>` of the manifest `image` names now; an image given with a digest is
    /// that digest, without asking. Errors are one line: the reason, as the registry or the
    /// connection gave it.
    pub async fn resolve(&self, image: &str) -> Result<String, String> {
        let r = Reference::parse(image)?;
        if let Some(d) = r.digest {
            return Ok(d);
        }
        let top = self.registry.manifest(&r, r.manifest_reference()).await?;
        Ok(sha256_digest(&top.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_digest_is_that_of_the_manifest_as_served() {
        let (addr, seen) = super::super::registry::tests::fake_registry().await;
        let d = ImageDigests::new(vec![addr.clone()]);
        let got = d.resolve(&format!("{addr}/app:1")).await;
        assert_eq!(got, Ok(sha256_digest(b"{}")));
        let pinned = format!("{addr}/app:1@{}", sha256_digest(b"x"));
        assert_eq!(d.resolve(&pinned).await, Ok(sha256_digest(b"x")));
        let missing = d.resolve(&format!("{addr}/app:2")).await;
        assert_eq!(missing, Err("manifest unknown".to_string()));
        let asked = seen.lock().map(|s| s.len()).unwrap_or(0);
        assert_eq!(
            asked, 4,
            "token dance, one manifest, one miss; none for the pinned one"
        );
    }
}
