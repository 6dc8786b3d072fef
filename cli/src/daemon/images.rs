//! The managers' image resolver ([`ImageResolver`], for pinning service images to digests)
//! on the worker's registry client, which already speaks token auth and plain HTTP to this
//! daemon's insecure registries. Wired here because the manager and worker crates never
//! import each other.

use futures::future::BoxFuture;
use rswarm_manager::image_pin::{ImageResolver, ResolveError};
use rswarm_worker::containerd::ImageDigests;

pub struct RegistryResolver(ImageDigests);

impl RegistryResolver {
    pub fn new(insecure_registries: Vec<String>) -> RegistryResolver {
        RegistryResolver(ImageDigests::new(insecure_registries))
    }
}

impl ImageResolver for RegistryResolver {
    fn resolve<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<String, ResolveError>> {
        Box::pin(async move { self.0.resolve(image).await.map_err(ResolveError::Registry) })
    }
}
