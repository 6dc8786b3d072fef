//! Reading who a node is from its certificate, and when to renew it.

use super::{role_from_ou, CaError};
use rand::Rng;
use rswarm_proto::model::{ClusterId, NodeId, NodeRole};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// What a node certificate says about its holder. It is only as trustworthy as the check
/// that accepted the certificate (the TLS handshake against the cluster CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub node_id: NodeId,
    pub role: NodeRole,
    pub cluster_id: ClusterId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Reads a node certificate (DER). It does not verify the signature.
pub fn parse_cert_der(der: &[u8]) -> Result<CertInfo, CaError> {
    let invalid = |reason: String| CaError::InvalidCert { reason };
    let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| invalid(e.to_string()))?;
    let subject = x509.subject();
    let node_id = single(subject, subject.iter_common_name(), "common name")?;
    let ou = single(
        subject,
        subject.iter_organizational_unit(),
        "organisational unit",
    )?;
    let role = role_from_ou(ou).ok_or_else(|| invalid(format!("unknown role OU {ou:?}")))?;
    let cluster_id = single(subject, subject.iter_organization(), "organisation")?;
    let validity = x509.validity();
    Ok(CertInfo {
        node_id: NodeId::from(node_id),
        role,
        cluster_id: ClusterId::from(cluster_id),
        not_before: from_unix(validity.not_before.timestamp()),
        not_after: from_unix(validity.not_after.timestamp()),
    })
}

/// Reads the first certificate of a PEM (a node's certificate file may carry the chain).
pub fn parse_cert_pem(pem: &str) -> Result<CertInfo, CaError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CaError::InvalidCert {
        reason: e.to_string(),
    })?;
    parse_cert_der(&der)
}

/// Exactly one attribute of a kind: two CNs would make "who is this" ambiguous.
fn single<'a, 'b>(
    subject: &X509Name<'_>,
    mut attrs: impl Iterator<Item = &'b AttributeTypeAndValue<'a>>,
    what: &str,
) -> Result<&'a str, CaError>
where
    'a: 'b,
{
    let invalid = |reason: String| CaError::InvalidCert { reason };
    let first = attrs
        .next()
        .ok_or_else(|| invalid(format!("subject {subject} has no {what}")))?;
    if attrs.next().is_some() {
        return Err(invalid(format!("subject {subject} has several of {what}")));
    }
    first
        .as_str()
        .map_err(|e| invalid(format!("subject {what}: {e}")))
}

fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// How long to wait before renewing a certificate: a random point between 50% and 80% of
/// its lifetime after `not_before` (Swarm's rule; the jitter spreads renewals of nodes that
/// joined together), measured from `now`. Zero if that point has passed.
pub fn renewal_delay(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    rng: &mut impl Rng,
) -> Duration {
    let lifetime = match not_after.duration_since(not_before) {
        Ok(lifetime) if !lifetime.is_zero() => lifetime,
        // A certificate that is never valid is of no use: replace it at once.
        _ => return Duration::ZERO,
    };
    // A whole number of per mille is plenty of jitter.
    let point = lifetime.mul_f64(f64::from(rng.random_range(500u32..=800)) / 1000.0);
    let renew_at = not_before + point;
    renew_at.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn renewal_between_half_and_four_fifths() {
        let mut rng = StdRng::seed_from_u64(7);
        let nb = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(1000);
        for _ in 0..1000 {
            let d = renewal_delay(nb, na, nb, &mut rng);
            assert!(
                (Duration::from_secs(500)..=Duration::from_secs(800)).contains(&d),
                "{d:?}"
            );
        }
        // Measured from now.
        let now = nb + Duration::from_secs(400);
        for _ in 0..1000 {
            let d = renewal_delay(nb, na, now, &mut rng);
            assert!((Duration::from_secs(100)..=Duration::from_secs(400)).contains(&d));
        }
        // Past the window, or a nonsensical certificate: renew now.
        assert_eq!(
            renewal_delay(nb, na, nb + Duration::from_secs(900), &mut rng),
            Duration::ZERO
        );
        assert_eq!(renewal_delay(na, nb, nb, &mut rng), Duration::ZERO);
    }

    #[test]
    fn parse_refuses_garbage_and_ca_certs() -> Result<(), Box<dyn std::error::Error>> {
        assert!(matches!(
            parse_cert_der(b"nope"),
            Err(CaError::InvalidCert { .. })
        ));
        assert!(parse_cert_pem("nope").is_err());
        // The root CA has no role OU.
        let ca = crate::ca::RootCa::generate()?;
        assert!(matches!(
            parse_cert_der(ca.cert_der()),
            Err(CaError::InvalidCert { .. })
        ));
        Ok(())
    }
}
