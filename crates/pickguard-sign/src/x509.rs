//! Certificate-based signing material: the leaf's key signs, the chain is
//! checked the way `model_signing` (pyOpenSSL's `X509StoreContext`) checks
//! it: against the trust anchors given, at the time of the leaf's
//! notBefore, with the leaf allowed to sign (KeyUsage digitalSignature or
//! ExtendedKeyUsage codeSigning).

use crate::SignError;
use der::{Decode, DecodePem, Encode};
use p256::ecdsa::signature::Verifier;
use x509_cert::Certificate;
use x509_cert::der::oid::ObjectIdentifier;

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// Every certificate in a PEM file, as DER.
pub fn pem_certs(text: &str) -> Result<Vec<Vec<u8>>, SignError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let end_marker = "-----END CERTIFICATE-----";
        let end = rest[start..]
            .find(end_marker)
            .ok_or_else(|| SignError::Key("unterminated PEM certificate".into()))?
            + start
            + end_marker.len();
        let cert = Certificate::from_pem(&rest.as_bytes()[start..end])
            .map_err(|e| SignError::Key(format!("bad certificate: {e}")))?;
        out.push(cert.to_der().map_err(|e| SignError::Key(e.to_string()))?);
        rest = &rest[end..];
    }
    if out.is_empty() {
        return Err(SignError::Key("no PEM certificate found".into()));
    }
    Ok(out)
}

fn parse(der: &[u8]) -> Result<Certificate, SignError> {
    Certificate::from_der(der).map_err(|e| SignError::Key(format!("bad certificate: {e}")))
}

/// The P-256 public key of a certificate.
pub fn leaf_key(der: &[u8]) -> Result<p256::ecdsa::VerifyingKey, SignError> {
    let c = parse(der)?;
    let spki = c
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| SignError::Key(e.to_string()))?;
    use p256::pkcs8::DecodePublicKey;
    p256::ecdsa::VerifyingKey::from_public_key_der(&spki)
        .map_err(|_| SignError::Key("the signing certificate's key is not EC P-256".into()))
}

/// Whether `issuer` signed `cert`.
fn signed_by(cert: &Certificate, issuer: &Certificate) -> bool {
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    let Ok(spki) = issuer.tbs_certificate.subject_public_key_info.to_der() else {
        return false;
    };
    use p256::pkcs8::DecodePublicKey as _;
    let alg = cert.signature_algorithm.oid;
    if alg == ECDSA_SHA256 {
        if let (Ok(k), Ok(s)) = (
            p256::ecdsa::VerifyingKey::from_public_key_der(&spki),
            p256::ecdsa::DerSignature::try_from(sig),
        ) {
            return k.verify(&tbs, &s).is_ok();
        }
        if let (Ok(k), Ok(s)) = (
            p384::ecdsa::VerifyingKey::from_public_key_der(&spki),
            p384::ecdsa::Signature::from_der(sig),
        ) {
            use p384::ecdsa::signature::hazmat::PrehashVerifier;
            let digest = <sha2::Sha256 as sha2::Digest>::digest(&tbs);
            return k.verify_prehash(&digest, &s).is_ok();
        }
    } else if alg == ECDSA_SHA384 {
        if let (Ok(k), Ok(s)) = (
            p384::ecdsa::VerifyingKey::from_public_key_der(&spki),
            p384::ecdsa::DerSignature::try_from(sig),
        ) {
            return k.verify(&tbs, &s).is_ok();
        }
        if let (Ok(k), Ok(s)) = (
            p256::ecdsa::VerifyingKey::from_public_key_der(&spki),
            p256::ecdsa::Signature::from_der(sig),
        ) {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let digest = <sha2::Sha384 as sha2::Digest>::digest(&tbs);
            return k.verify_prehash(&digest[..32], &s).is_ok();
        }
    }
    false
}

fn ext(c: &Certificate, oid: ObjectIdentifier) -> Option<&[u8]> {
    c.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes())
}

fn valid_at(c: &Certificate, t: std::time::Duration) -> bool {
    let v = &c.tbs_certificate.validity;
    v.not_before.to_unix_duration() <= t && t <= v.not_after.to_unix_duration()
}

fn is_ca(c: &Certificate) -> bool {
    ext(c, BASIC_CONSTRAINTS)
        .and_then(|b| x509_cert::ext::pkix::BasicConstraints::from_der(b).ok())
        .is_some_and(|bc| bc.ca)
}

fn may_sign(c: &Certificate) -> bool {
    let ku = ext(c, KEY_USAGE)
        .and_then(|b| x509_cert::ext::pkix::KeyUsage::from_der(b).ok())
        .is_some_and(|k| k.digital_signature());
    let eku = ext(c, EXT_KEY_USAGE)
        .and_then(|b| x509_cert::ext::pkix::ExtendedKeyUsage::from_der(b).ok())
        .is_some_and(|e| e.0.contains(&CODE_SIGNING));
    ku || eku
}

/// Check the leaf (first of `bundle_chain`) up to a trust anchor in `anchors`.
pub fn verify_chain(bundle_chain: &[Vec<u8>], anchors: &[Vec<u8>]) -> Result<(), String> {
    let certs: Vec<Certificate> = bundle_chain
        .iter()
        .map(|d| parse(d).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let trusted: Vec<Certificate> = anchors
        .iter()
        .map(|d| parse(d).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let leaf = certs
        .first()
        .ok_or("the signature carries no certificate")?;
    if !may_sign(leaf) {
        return Err(
            "the signing certificate allows neither digitalSignature nor codeSigning".into(),
        );
    }
    let t = leaf.tbs_certificate.validity.not_before.to_unix_duration();
    let mut cur = leaf.clone();
    for _ in 0..10 {
        if !valid_at(&cur, t) {
            return Err(format!(
                "certificate {} is not valid at the signing certificate's notBefore",
                cur.tbs_certificate.subject
            ));
        }
        // A trusted certificate ends the path (the anchor itself, or one that signed it).
        if trusted.iter().any(|a| a == &cur) {
            return Ok(());
        }
        if let Some(a) = trusted
            .iter()
            .find(|a| a.tbs_certificate.subject == cur.tbs_certificate.issuer && signed_by(&cur, a))
        {
            if !valid_at(a, t) {
                return Err(format!(
                    "trust anchor {} is not valid at the signing time",
                    a.tbs_certificate.subject
                ));
            }
            return Ok(());
        }
        let next = certs.iter().chain(trusted.iter()).find(|c| {
            *c != &cur
                && c.tbs_certificate.subject == cur.tbs_certificate.issuer
                && is_ca(c)
                && signed_by(&cur, c)
        });
        match next {
            Some(n) => cur = n.clone(),
            None => {
                return Err(format!(
                    "no trusted issuer for {}",
                    cur.tbs_certificate.subject
                ));
            }
        }
    }
    Err("certificate chain longer than 10".into())
}
