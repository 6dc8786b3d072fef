//! Join tokens, in Swarm's format: `SWMTKN-1-<CA digest>-<secret>`.
//!
//! The CA digest (SHA-256 of the CA certificate, base 36, 50 characters) lets the joining node
//! authenticate the cluster before it trusts anything the cluster sends; the secret (16 random
//! bytes, base 36, 25 characters) lets the cluster authenticate the node and says which role
//! it joins as.

use super::RootCa;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
/// 36^50 > 2^256, so every SHA-256 fits.
const DIGEST_LEN: usize = 50;
/// 36^25 > 2^128, so every 16-byte secret fits.
const SECRET_LEN: usize = 25;
const SECRET_BYTES: usize = 16;
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Deliberately one message for every defect: the details would only help guessing.
    #[error("invalid join token")]
    Invalid,
}

/// A parsed join token. `Debug` hides the secret; `Display` prints the whole token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Base-36 SHA-256 of the CA certificate, 50 characters.
    ca_digest: String,
    /// 25 base-36 characters.
    secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{VERSION}-{}-{}", self.ca_digest, self.secret)
    }
}

impl JoinToken {
    /// The token for `secret` (as made by [`generate_secret`]) on the cluster of `ca`.
    pub fn new(ca: &RootCa, secret: String) -> JoinToken {
        JoinToken {
            ca_digest: ca_digest_base36(ca.cert_der()),
            secret,
        }
    }

    pub fn parse(s: &str) -> Result<JoinToken, TokenError> {
        let mut parts = s.trim().split('-');
        let (Some(PREFIX), Some(VERSION), Some(digest), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Invalid);
        };
        // Decoding (not just a character check) also refuses values too large for their
        // byte width, so every accepted string is the unique encoding of its value.
        if digest.len() != DIGEST_LEN
            || secret.len() != SECRET_LEN
            || from_base36::<32>(digest).is_none()
            || from_base36::<SECRET_BYTES>(secret).is_none()
        {
            return Err(TokenError::Invalid);
        }
        Ok(JoinToken {
            ca_digest: digest.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The CA digest as it appears in the token (base 36).
    pub fn ca_digest(&self) -> &str {
        &self.ca_digest
    }

    /// The secret half, as stored in the cluster object.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether the token pins this CA certificate.
    pub fn matches_ca(&self, ca_cert_der: &[u8]) -> bool {
        // The digest is public, so a plain comparison is fine here.
        ca_digest_base36(ca_cert_der) == self.ca_digest
    }

    /// Whether the secret is `expected`, compared in constant time so that response timing
    /// does not reveal how many leading characters a guess got right.
    pub fn secret_matches(&self, expected: &str) -> bool {
        constant_time_eq(self.secret.as_bytes(), expected.as_bytes())
    }
}

/// A new random token secret: 16 bytes, 25 base-36 characters.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    to_base36(&bytes, SECRET_LEN)
}

/// The base-36 form of a CA certificate's SHA-256, as carried in join tokens.
pub(crate) fn ca_digest_base36(ca_cert_der: &[u8]) -> String {
    to_base36(&Sha256::digest(ca_cert_der), DIGEST_LEN)
}

/// Length is not secret (it is fixed by the format); the contents are.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Big-endian bytes as base 36, left-padded with '0' to `width`.
fn to_base36(bytes: &[u8], width: usize) -> String {
    let mut n = bytes.to_vec();
    let mut digits = Vec::new();
    while n.iter().any(|&b| b != 0) {
        // Long division of n by 36; the remainder is the next digit.
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            // rem < 36, so acc < 36 * 256 and the quotient fits a byte.
            *b = (acc / 36) as u8;
            rem = acc % 36;
        }
        digits.push(ALPHABET[rem as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.iter().rev().map(|&d| char::from(d)).collect()
}

/// Base 36 (lowercase) into `N` big-endian bytes; `None` on a foreign character or overflow.
fn from_base36<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for c in s.bytes() {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'z' => c - b'a' + 10,
            _ => return None,
        };
        // out = out * 36 + digit
        let mut carry = u32::from(digit);
        for b in out.iter_mut().rev() {
            let acc = u32::from(*b) * 36 + carry;
            *b = (acc & 0xff) as u8;
            carry = acc >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(ca: &RootCa) -> JoinToken {
        JoinToken::new(ca, generate_secret())
    }

    #[test]
    fn base36_round_trips() {
        assert_eq!(to_base36(&[0; 4], 3), "000");
        assert_eq!(to_base36(&[0, 0, 0, 36], 1), "10");
        assert_eq!(to_base36(&[1, 0], 0), "74"); // 256 = 7 * 36 + 4
        let max = [0xffu8; 32];
        let s = to_base36(&max, DIGEST_LEN);
        assert_eq!(s.len(), DIGEST_LEN);
        assert_eq!(from_base36::<32>(&s), Some(max));
        assert_eq!(
            from_base36::<16>(&to_base36(&[0xff; 16], SECRET_LEN)),
            Some([0xff; 16])
        );
        // One past the largest value does not fit.
        assert_eq!(from_base36::<1>("74"), None);
        assert_eq!(from_base36::<1>("73"), Some([255]));
        assert_eq!(from_base36::<1>("A"), None);
    }

    #[test]
    fn round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let ca = RootCa::generate()?;
        let t = token(&ca);
        let s = t.to_string();
        assert!(s.starts_with("SWMTKN-1-"));
        assert_eq!(s.len(), "SWMTKN-1-".len() + DIGEST_LEN + 1 + SECRET_LEN);
        let parsed = JoinToken::parse(&s)?;
        assert_eq!(parsed, t);
        assert!(parsed.matches_ca(ca.cert_der()));
        assert!(parsed.secret_matches(t.secret()));
        // Pasted with a newline.
        assert_eq!(JoinToken::parse(&format!(" {s}\n"))?, t);
        // The secret never shows in Debug.
        assert!(!format!("{t:?}").contains(t.secret()));
        Ok(())
    }

    #[test]
    fn secrets_are_random_and_well_formed() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), SECRET_LEN);
        assert!(from_base36::<SECRET_BYTES>(&a).is_some());
    }

    #[test]
    fn garbled_tokens() -> Result<(), Box<dyn std::error::Error>> {
        let ca = RootCa::generate()?;
        let t = token(&ca);
        let (d, s) = (t.ca_digest(), t.secret());
        let cases = [
            String::new(),
            "SWMTKN".to_owned(),
            "SWMTKN-1".to_owned(),
            format!("SWMTKN-1-{d}"),
            format!("SWMTKN-1-{d}-"),
            format!("SWMTKN-2-{d}-{s}"),
            format!("swmtkn-1-{d}-{s}"),
            format!("XWMTKN-1-{d}-{s}"),
            format!("SWMTKN-1-{d}-{s}-extra"),
            format!("SWMTKN-1-{d}x-{s}"),
            format!("SWMTKN-1-{d}-{s}x"),
            format!("SWMTKN-1-{}-{s}", &d[1..]),
            format!("SWMTKN-1-{d}-{}", &s[1..]),
            format!("SWMTKN-1-{}-{s}", d.to_uppercase()),
            format!("SWMTKN-1-{d}-{}", "z".repeat(SECRET_LEN)), // > 2^128
            format!("SWMTKN-1-{}-{s}", "z".repeat(DIGEST_LEN)), // > 2^256
            format!("SWMTKN-1-{d}-{s}").replace('-', "_"),
            format!("SWMTKN-1-{d}-{}é", &s[..SECRET_LEN - 2]),
        ];
        for case in cases {
            let err = JoinToken::parse(&case).err();
            assert_eq!(err, Some(TokenError::Invalid), "{case:?} was accepted");
            assert_eq!(TokenError::Invalid.to_string(), "invalid join token");
        }
        Ok(())
    }

    /// Every single-character substitution, at every position, must either fail to parse or
    /// fail one of the two checks.
    #[test]
    fn single_character_changes_are_caught() -> Result<(), Box<dyn std::error::Error>> {
        let ca = RootCa::generate()?;
        let t = token(&ca);
        let s = t.to_string();
        let replacements: Vec<char> = ALPHABET
            .iter()
            .map(|&b| char::from(b))
            .chain(['A', 'Z', 'S', '-', '_', ' ', '2'])
            .collect();
        let mut tried = 0;
        for (i, orig) in s.char_indices() {
            for &r in &replacements {
                if r == orig {
                    continue;
                }
                let mut changed = s.clone();
                changed.replace_range(i..i + orig.len_utf8(), &r.to_string());
                tried += 1;
                if let Ok(p) = JoinToken::parse(&changed) {
                    assert!(
                        !(p.matches_ca(ca.cert_der()) && p.secret_matches(t.secret())),
                        "{changed} passed"
                    );
                }
            }
        }
        assert!(tried > 3000);
        Ok(())
    }

    #[test]
    fn digest_of_another_ca_does_not_match() -> Result<(), Box<dyn std::error::Error>> {
        let a = RootCa::generate()?;
        let b = RootCa::generate()?;
        let t = token(&a);
        assert!(t.matches_ca(a.cert_der()));
        assert!(!t.matches_ca(b.cert_der()));
        assert!(!t.matches_ca(b""));
        Ok(())
    }

    #[test]
    fn constant_time_compare() -> Result<(), Box<dyn std::error::Error>> {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"bbc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));

        let ca = RootCa::generate()?;
        let t = token(&ca);
        let secret = t.secret().to_owned();
        assert!(t.secret_matches(&secret));
        assert!(!t.secret_matches(""));
        assert!(!t.secret_matches(&secret[1..]));
        assert!(!t.secret_matches(&format!("{secret}0")));
        assert!(!t.secret_matches(&generate_secret()));
        Ok(())
    }
}
