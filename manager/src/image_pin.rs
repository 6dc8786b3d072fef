//! Pinning service images to digests, as Swarm's managers do (moby `CreateService` /
//! `UpdateService` with `QueryRegistry`): the manager that receives `service create` asks the
//! registry for the manifest digest of the image's tag and stores `repo:tag@sha256:...`, so
//! every node runs the same version even if the tag moves later.
//!
//! The registry client is the worker's; this crate only sees it through [`ImageResolver`],
//! which the daemon injects (nothing here does I/O of its own).

use futures::future::BoxFuture;
use rswarm_proto::model::reference::{self, Reference};
use std::time::Duration;

/// How long `service create`/`update` waits for the registry before storing the image as
/// given: an unresponsive registry must not hang the command (the registry client's own
/// timeouts are a minute per request, made for pulls).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The registry's (or the connection's) own words.
    #[error("{0}")]
    Registry(String),
    #[error("no answer from the registry within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("the registry gave an invalid digest: {0}")]
    BadDigest(String),
    #[error("{0}")]
    InvalidReference(String),
}

/// Resolves an image reference's tag to the digest of its manifest (for a multi-platform
/// image, of its index) at the registry, as served.
pub trait ImageResolver: Send + Sync {
    /// `sha256:<hex>`.
    fn resolve<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<String, ResolveError>>;
}

/// What to store for a service's image, and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub image: String,
    pub warning: Option<String>,
}

/// Docker's warning when an image could not be resolved and is stored as given.
pub fn unresolved_warning(image: &str) -> String {
    format!(
        "image {image} could not be accessed on a registry to record its digest. Each node will \
         access {image} independently, possibly leading to different nodes running different \
         versions of the image."
    )
}

/// The image to store for `image` (the one asked for): pinned to the digest the registry
/// gives within `timeout`, or as given with a warning when it gives none. An image that
/// already has a digest is kept as it is, without asking.
///
/// `current` is the image of the service being updated. When the registry fails and the
/// image asked for names the same repository and tag as a pinned current image, the current
/// one is kept: a registry that blinks during `stack deploy` (which asks again on every
/// deploy) must not unpin the service and replace its tasks.
pub async fn pin_image(
    resolver: &dyn ImageResolver,
    image: &str,
    current: Option<&str>,
    timeout: Duration,
) -> Pinned {
    let failed = match Reference::parse(image) {
        Err(e) => ResolveError::InvalidReference(e),
        Ok(r) if r.digest.is_some() => {
            return Pinned {
                image: image.to_owned(),
                warning: None,
            }
        }
        Ok(_) => match tokio::time::timeout(timeout, resolver.resolve(image)).await {
            Err(_) => ResolveError::Timeout(timeout),
            Ok(Err(e)) => e,
            Ok(Ok(digest)) => match reference::pin(image, &digest) {
                Ok(pinned) => {
                    tracing::debug!(image, pinned, "image pinned to its digest");
                    return Pinned {
                        image: pinned,
                        warning: None,
                    };
                }
                Err(e) => ResolveError::BadDigest(e),
            },
        },
    };
    tracing::warn!(image, error = %failed, "unable to pin image to a digest");
    match current {
        Some(cur)
            if cur != image
                && Reference::parse(cur).is_ok_and(|r| r.digest.is_some())
                && reference::same_name_and_tag(cur, image) =>
        {
            Pinned {
                image: cur.to_owned(),
                warning: Some(format!(
                    "image {image} could not be accessed on a registry to record its digest \
                     ({failed}); the service keeps {cur}."
                )),
            }
        }
        _ => Pinned {
            image: image.to_owned(),
            warning: Some(unresolved_warning(image)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A registry that knows one digest per image, or fails, or never answers; it counts
    /// what it was asked.
    enum Answer {
        Digest(&'static str),
        Fail(&'static str),
        Hang,
    }
    struct Fake {
        answer: Answer,
        asked: AtomicUsize,
    }
    fn fake(answer: Answer) -> Fake {
        Fake {
            answer,
            asked: AtomicUsize::new(0),
        }
    }
    impl ImageResolver for Fake {
        fn resolve<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<String, ResolveError>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match self.answer {
                    Answer::Digest(d) => Ok(d.to_owned()),
                    Answer::Fail(e) => Err(ResolveError::Registry(e.to_owned())),
                    Answer::Hang => futures::future::pending().await,
                }
            })
        }
    }

    const IMG: &str = "127.0.0.1:5055/busybox:latest";

    #[tokio::test]
    async fn a_resolved_tag_is_stored_pinned() {
        let r = fake(Answer::Digest(D));
        let got = pin_image(&r, IMG, None, RESOLVE_TIMEOUT).await;
        assert_eq!(
            got,
            Pinned {
                image: format!("{IMG}@{D}"),
                warning: None
            }
        );
        let got = pin_image(&r, "busybox", None, RESOLVE_TIMEOUT).await;
        assert_eq!(got.image, format!("busybox:latest@{D}"));
    }

    #[tokio::test]
    async fn an_unreachable_registry_leaves_the_image_as_given_with_dockers_warning() {
        let r = fake(Answer::Fail("connection refused"));
        let got = pin_image(&r, IMG, None, RESOLVE_TIMEOUT).await;
        assert_eq!(got.image, IMG);
        assert_eq!(got.warning, Some(unresolved_warning(IMG)));
        let w = got.warning.unwrap_or_default();
        assert!(
            w.starts_with(&format!(
                "image {IMG} could not be accessed on a registry to record its digest. Each node will access {IMG} independently"
            )),
            "{w}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unresponsive_registry_is_given_up_on() {
        let r = fake(Answer::Hang);
        let got = pin_image(&r, IMG, None, RESOLVE_TIMEOUT).await;
        assert_eq!(got.image, IMG);
        assert!(got.warning.is_some());
    }

    #[tokio::test]
    async fn an_image_with_a_digest_is_kept_without_asking() {
        let r = fake(Answer::Fail("must not be asked"));
        let given = format!("{IMG}@{D}");
        let got = pin_image(&r, &given, None, RESOLVE_TIMEOUT).await;
        assert_eq!(
            got,
            Pinned {
                image: given,
                warning: None
            }
        );
        assert_eq!(r.asked.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_bad_digest_or_reference_is_not_stored() {
        let r = fake(Answer::Digest("sha256:nothex"));
        let got = pin_image(&r, IMG, None, RESOLVE_TIMEOUT).await;
        assert_eq!(got.image, IMG);
        assert!(got.warning.is_some());
        let got = pin_image(&r, "Not A Reference", None, RESOLVE_TIMEOUT).await;
        assert_eq!(got.image, "Not A Reference");
        assert_eq!(
            r.asked.load(Ordering::SeqCst),
            1,
            "a bad reference is not sent"
        );
    }

    #[tokio::test]
    async fn an_update_keeps_the_current_pin_when_the_registry_fails() {
        let r = fake(Answer::Fail("connection refused"));
        let current = format!("{IMG}@{D}");
        let got = pin_image(&r, IMG, Some(&current), RESOLVE_TIMEOUT).await;
        assert_eq!(got.image, current);
        assert!(got
            .warning
            .as_deref()
            .is_some_and(|w| w.contains("the service keeps")));
        // Another tag is what was asked for: stored as given.
        let other = "127.0.0.1:5055/busybox:1";
        let got = pin_image(&r, other, Some(&current), RESOLVE_TIMEOUT).await;
        assert_eq!(got.image, other);
        assert_eq!(got.warning, Some(unresolved_warning(other)));
        // When it answers, the tag's digest now is what counts.
        let moved = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let r = fake(Answer::Digest(moved));
        let got = pin_image(&r, IMG, Some(&current), RESOLVE_TIMEOUT).await;
        assert_eq!(got.image, format!("{IMG}@{moved}"));
    }
}
