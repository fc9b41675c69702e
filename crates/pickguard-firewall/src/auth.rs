//! Who is asking: tokens per person or team, stored as SHA-256 hashes, each
//! with a role and the names it may publish.
//!
//! A request presents its secret as `Authorization: Bearer SECRET` or as the
//! password of HTTP Basic (any user name: twine and uv send `__token__`).
//! The secret is hashed and compared with the configured hashes; the
//! secrets themselves are never stored. The legacy `admin_token` and
//! `upload_token` keys still work (as an `admin` and a publish-anything
//! identity) and are compared in constant time.

use crate::config::{Role, Token};
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    /// Globs over normalised names this identity may publish (publish role).
    publish: globset::GlobSet,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// May this identity upload files of `project` (normalised)?
    pub fn may_publish(&self, project: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Publish => self.publish.is_match(project),
            Role::Read => false,
        }
    }
}

/// Every configured credential.
pub struct Auth {
    tokens: Vec<(String, Identity)>,
    legacy_admin: Option<String>,
    legacy_upload: Option<String>,
}

/// `sha256:<hex>` of a secret, as the `[[token]] sha256` key holds it (bare hex accepted too).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn globs(patterns: &[String]) -> anyhow::Result<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        b.add(globset::Glob::new(&pickguard_index::normalize(p))?);
    }
    Ok(b.build()?)
}

/// The secret a request presents, if any.
pub fn presented_secret(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(t) = v.strip_prefix("Bearer ") {
        return Some(t.trim().to_owned());
    }
    let b = v.strip_prefix("Basic ")?;
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim()).ok()?;
    let up = String::from_utf8(raw).ok()?;
    up.split_once(':').map(|(_, p)| p.to_owned())
}

impl Auth {
    pub fn new(
        tokens: &[Token],
        legacy_admin: Option<String>,
        legacy_upload: Option<String>,
    ) -> anyhow::Result<Auth> {
        let mut out = Vec::new();
        for t in tokens {
            let hash = t
                .sha256
                .strip_prefix("sha256:")
                .unwrap_or(&t.sha256)
                .to_ascii_lowercase();
            anyhow::ensure!(
                hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                "token {:?}: sha256 must be 64 hex digits (make one with `pickguard firewall hash-token`)",
                t.name
            );
            anyhow::ensure!(
                t.role == Role::Publish || t.publish.is_empty(),
                "token {:?}: `publish` patterns apply to role \"publish\" only",
                t.name
            );
            out.push((
                hash,
                Identity {
                    name: t.name.clone(),
                    role: t.role,
                    publish: globs(&t.publish)
                        .map_err(|e| anyhow::anyhow!("token {:?}: {e}", t.name))?,
                },
            ));
        }
        Ok(Auth {
            tokens: out,
            legacy_admin,
            legacy_upload,
        })
    }

    /// Is any admin credential configured? (Without one the admin API is off.)
    pub fn admin_configured(&self) -> bool {
        self.legacy_admin.is_some() || self.tokens.iter().any(|(_, i)| i.is_admin())
    }

    /// Is any publishing credential configured? (Without one uploads are off.)
    pub fn publish_configured(&self) -> bool {
        self.legacy_upload.is_some()
            || self
                .tokens
                .iter()
                .any(|(_, i)| matches!(i.role, Role::Admin | Role::Publish))
    }

    /// The identity behind a request's credential, if it is a valid one.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Identity> {
        self.identify_secret(&presented_secret(headers)?)
    }

    /// The identity behind a secret (the console's login form).
    pub fn identify_secret(&self, secret: &str) -> Option<Identity> {
        let secret = secret.to_owned();
        if secret.is_empty() {
            return None;
        }
        if let Some(a) = &self.legacy_admin
            && ct_eq(secret.as_bytes(), a.as_bytes())
        {
            return Some(Identity {
                name: "admin_token".into(),
                role: Role::Admin,
                publish: globset::GlobSet::empty(),
            });
        }
        if let Some(u) = &self.legacy_upload
            && ct_eq(secret.as_bytes(), u.as_bytes())
        {
            return Some(Identity {
                name: "upload_token".into(),
                role: Role::Publish,
                publish: globs(&["*".into()]).unwrap_or_else(|_| globset::GlobSet::empty()),
            });
        }
        let h = hash_secret(&secret);
        self.tokens
            .iter()
            .find(|(th, _)| ct_eq(th.as_bytes(), h.as_bytes()))
            .map(|(_, i)| i.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hdr(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn tokens_roles_and_publish_patterns() {
        let tokens = vec![
            Token {
                name: "ml-team".into(),
                sha256: format!("sha256:{}", hash_secret("ml-secret")),
                role: Role::Publish,
                publish: vec!["acme-ml-*".into()],
            },
            Token {
                name: "reader".into(),
                sha256: hash_secret("r"),
                role: Role::Read,
                publish: vec![],
            },
        ];
        let a = Auth::new(&tokens, None, None).unwrap();
        assert!(!a.admin_configured());
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{u}:{p}")
                )
            )
        };
        let ml = a.identify(&hdr(&basic("__token__", "ml-secret"))).unwrap();
        assert_eq!(ml.name, "ml-team");
        assert!(ml.may_publish("acme-ml-core"));
        assert!(!ml.may_publish("acme-web"));
        assert!(!ml.may_publish("filelock"));
        let r = a.identify(&hdr("Bearer r")).unwrap();
        assert!(!r.may_publish("acme-ml-core"));
        assert!(a.identify(&hdr(&basic("ml-team", "wrong"))).is_none());
        assert!(a.identify(&hdr("Bearer ")).is_none());
        assert!(a.identify(&HeaderMap::new()).is_none());
        // A stored hash is not itself a credential.
        assert!(
            a.identify(&hdr(&format!("Bearer {}", hash_secret("r"))))
                .is_none()
        );
        let bad = Token {
            name: "x".into(),
            sha256: "abc".into(),
            role: Role::Read,
            publish: vec![],
        };
        assert!(Auth::new(&[bad], None, None).is_err());
    }
}
