//! The root CA: generating it, loading it from the store, and signing node CSRs.

use super::{role_ou, CaError, CA_CN};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rswarm_proto::model::{ClusterId, NodeId, NodeRole};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

/// Lifetime of a root CA, as Swarm's.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates start a minute in the past so that a peer whose clock is slightly behind
/// does not refuse a fresh certificate as "not yet valid".
const BACKDATE: Duration = Duration::from_secs(60);

/// The cluster's root CA: its certificate and signing key. The key lives in the replicated
/// store so that every manager can sign; `Debug` never prints it.
pub struct RootCa {
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
    /// The CA's subject, key identifier and key, parsed once from the certificate.
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.digest())
            .finish_non_exhaustive()
    }
}

impl RootCa {
    /// A new self-signed ECDSA P-256 CA ("swarm-ca", valid 20 years).
    pub fn generate() -> Result<RootCa, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::GenerateKey)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_CN);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(now + CA_VALIDITY);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(CaError::SelfSign)?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Loads a CA from its PEM certificate and PEM (PKCS#8) key, checking that the
    /// certificate is a CA and that the key is its own.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa, CaError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            CaError::InvalidCaCert {
                reason: e.to_string(),
            }
        })?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CaError::InvalidCaCert {
                reason: e.to_string(),
            })?;
        if !x509.is_ca() {
            return Err(CaError::InvalidCaCert {
                reason: "not a CA certificate (basic constraints)".to_owned(),
            });
        }
        let key = KeyPair::from_pem(key_pem).map_err(CaError::InvalidCaKey)?;
        if key.der_bytes() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::CaKeyMismatch);
        }
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::InvalidCaCert {
                reason: e.to_string(),
            })?;
        Ok(RootCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            cert_der: cert_der.to_vec(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Lowercase hex SHA-256 of the CA certificate's DER: what join tokens pin.
    pub fn digest(&self) -> String {
        Sha256::digest(&self.cert_der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Issues a node certificate for the public key in `csr_pem`. Everything that says who the
    /// node is comes from the arguments, never from the CSR: the CSR only proves possession of
    /// the key (its signature is verified), so the private key never leaves the node.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        node_id: &NodeId,
        role: NodeRole,
        cluster_id: &ClusterId,
        validity: Duration,
    ) -> Result<String, CaError> {
        let public_key = csr_public_key(csr_pem)?;

        let now = SystemTime::now();
        let not_after = now
            .checked_add(validity)
            .filter(|_| !validity.is_zero())
            .ok_or(CaError::Validity {
                validity_secs: validity.as_secs(),
            })?;

        let ou = role_ou(role);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id.as_str());
        dn.push(DnType::OrganizationalUnitName, ou);
        dn.push(DnType::OrganizationName, cluster_id.as_str());
        params.distinguished_name = dn;

        let mut names = vec![node_id.as_str(), ou];
        if role == NodeRole::Manager {
            names.push(CA_CN);
        }
        let sign_err = |source| CaError::Sign {
            node: node_id.clone(),
            source,
        };
        params.subject_alt_names = names
            .into_iter()
            .map(|n| Ok(SanType::DnsName(n.to_owned().try_into()?)))
            .collect::<Result<_, rcgen::Error>>()
            .map_err(sign_err)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(not_after);
        params.serial_number = Some(random_serial());

        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(sign_err)?;
        Ok(cert.pem())
    }
}

/// Parses a CSR, checks that it carries a P-256 key and that its signature verifies, and
/// returns the key.
fn csr_public_key(csr_pem: &str) -> Result<rcgen::PublicKey, CaError> {
    let invalid = |reason: String| CaError::InvalidCsr { reason };
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| invalid(e.to_string()))?;

    // rcgen maps any ECDSA-with-SHA256 CSR to P-256 by its signature algorithm alone, so the
    // curve is checked here: a key on another curve would otherwise be mis-encoded.
    let (_, parsed) =
        X509CertificationRequest::from_der(&der).map_err(|e| invalid(e.to_string()))?;
    let spki = &parsed.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(invalid("the key is not an ECDSA P-256 key".to_owned()));
    }

    let csr = CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => CaError::CsrSignature,
        other => invalid(other.to_string()),
    })?;
    Ok(csr.public_key)
}

/// A new P-256 key and a CSR for it, both PEM. The CSR's subject is empty: the CA decides
/// what goes into the certificate.
pub fn generate_key_and_csr() -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::GenerateKey)?;
    // CertificateParams is non-exhaustive, hence default-then-assign.
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(CaError::CreateCsr)?;
    Ok((key.serialize_pem(), csr))
}

/// PEM-encodes a DER certificate (e.g. the CA certificate a joining node verified).
pub fn cert_der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

/// 16 random bytes, positive: RFC 5280 wants serials unique per CA and at most 20 bytes.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{parse_cert_pem, CertInfo};
    use x509_parser::extensions::GeneralName;

    fn sign(ca: &RootCa, csr: &str, role: NodeRole) -> Result<String, CaError> {
        ca.sign_csr(
            csr,
            &NodeId::from("node1"),
            role,
            &ClusterId::from("cluster1"),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn generated_ca_is_a_p256_ca() -> Result<(), Box<dyn std::error::Error>> {
        let ca = RootCa::generate()?;
        let (_, x509) = x509_parser::parse_x509_certificate(ca.cert_der())?;
        assert!(x509.is_ca());
        assert_eq!(
            x509.subject().iter_common_name().next().map(|a| a.as_str()),
            Some(Ok(CA_CN))
        );
        let ku = x509.key_usage()?.ok_or("no key usage")?.value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let years = (x509.validity().not_after.timestamp()
            - x509.validity().not_before.timestamp())
            / (365 * 24 * 3600);
        assert_eq!(years, 20);
        assert_eq!(ca.digest().len(), 64);

        // Round trip through PEM gives the same CA.
        let again = RootCa::from_pem(ca.cert_pem(), ca.key_pem())?;
        assert_eq!(again.digest(), ca.digest());
        Ok(())
    }

    #[test]
    fn from_pem_refuses_a_foreign_key() -> Result<(), Box<dyn std::error::Error>> {
        let a = RootCa::generate()?;
        let b = RootCa::generate()?;
        assert!(matches!(
            RootCa::from_pem(a.cert_pem(), b.key_pem()),
            Err(CaError::CaKeyMismatch)
        ));
        assert!(matches!(
            RootCa::from_pem("garbage", a.key_pem()),
            Err(CaError::InvalidCaCert { .. })
        ));
        Ok(())
    }

    #[test]
    fn from_pem_refuses_a_node_certificate() -> Result<(), Box<dyn std::error::Error>> {
        let ca = RootCa::generate()?;
        let (key, csr) = generate_key_and_csr()?;
        let cert = sign(&ca, &csr, NodeRole::Manager)?;
        assert!(matches!(
            RootCa::from_pem(&cert, &key),
            Err(CaError::InvalidCaCert { .. })
        ));
        Ok(())
    }

    #[test]
    fn signs_a_manager_certificate() -> Result<(), Box<dyn std::error::Error>> {
        let ca = RootCa::generate()?;
        let (key_pem, csr) = generate_key_and_csr()?;
        let before = SystemTime::now();
        let cert = sign(&ca, &csr, NodeRole::Manager)?;

        let info: CertInfo = parse_cert_pem(&cert)?;
        assert_eq!(info.node_id, NodeId::from("node1"));
        assert_eq!(info.role, NodeRole::Manager);
        assert_eq!(info.cluster_id, ClusterId::from("cluster1"));
        assert!(info.not_before <= before - Duration::from_secs(59));
        let lifetime = info.not_after.duration_since(before)?;
        assert!(lifetime.as_secs().abs_diff(3600) <= 2);

        let der = CertificateDer::from_pem_slice(cert.as_bytes())?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)?;
        // The certificate carries the CSR's key, i.e. the node's.
        let node_key = KeyPair::from_pem(&key_pem)?;
        assert_eq!(
            x509.public_key().subject_public_key.data.as_ref(),
            node_key.der_bytes()
        );
        let sans: Vec<String> = x509
            .subject_alternative_name()?
            .ok_or("no SAN")?
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(s) => Some(s.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(sans, ["node1", "swarm-manager", "swarm-ca"]);
        let eku = x509.extended_key_usage()?.ok_or("no EKU")?.value;
        assert!(eku.client_auth && eku.server_auth);
        assert!(!x509.is_ca());
        // Signed by the CA.
        let (_, ca_x509) = x509_parser::parse_x509_certificate(ca.cert_der())?;
        x509.verify_signature(Some(ca_x509.public_key()))?;
        Ok(())
    }

    #[test]
    fn worker_certificate_has_worker_names() -> Result<(), Box<dyn std::error::Error>> {
        let ca = RootCa::generate()?;
        let (_, csr) = generate_key_and_csr()?;
        let cert = sign(&ca, &csr, NodeRole::Worker)?;
        assert_eq!(parse_cert_pem(&cert)?.role, NodeRole::Worker);
        let der = CertificateDer::from_pem_slice(cert.as_bytes())?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)?;
        let names = &x509
            .subject_alternative_name()?
            .ok_or("no SAN")?
            .value
            .general_names;
        assert_eq!(names.len(), 2);
        assert!(names.contains(&GeneralName::DNSName("swarm-worker")));
        Ok(())
    }

    #[test]
    fn serials_differ() -> Result<(), Box<dyn std::error::Error>> {
        let ca = RootCa::generate()?;
        let (_, csr) = generate_key_and_csr()?;
        let serial = |pem: &str| -> Result<Vec<u8>, Box<dyn std::error::Error>> {
            let der = CertificateDer::from_pem_slice(pem.as_bytes())?;
            let (_, x509) = x509_parser::parse_x509_certificate(&der)?;
            Ok(x509.raw_serial().to_vec())
        };
        let a = serial(&sign(&ca, &csr, NodeRole::Worker)?)?;
        let b = serial(&sign(&ca, &csr, NodeRole::Worker)?)?;
        assert_ne!(a, b);
        Ok(())
    }

    #[test]
    fn refuses_bad_csrs() -> Result<(), Box<dyn std::error::Error>> {
        let ca = RootCa::generate()?;
        assert!(matches!(
            sign(&ca, "not a csr", NodeRole::Worker),
            Err(CaError::InvalidCsr { .. })
        ));

        // Flip one bit in the signature (the last byte of the DER): the signature must fail.
        let (_, csr) = generate_key_and_csr()?;
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())?.to_vec();
        if let Some(last) = der.last_mut() {
            *last ^= 1;
        }
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(matches!(
            sign(&ca, &tampered, NodeRole::Worker),
            Err(CaError::CsrSignature)
        ));

        // A P-384 key is refused.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        let p384 = CertificateParams::default()
            .serialize_request(&key)?
            .pem()?;
        assert!(matches!(
            sign(&ca, &p384, NodeRole::Worker),
            Err(CaError::InvalidCsr { .. })
        ));

        assert!(matches!(
            ca.sign_csr(
                &csr,
                &NodeId::from("n"),
                NodeRole::Worker,
                &ClusterId::from("c"),
                Duration::ZERO
            ),
            Err(CaError::Validity { .. })
        ));
        Ok(())
    }
}
