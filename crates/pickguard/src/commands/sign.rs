//! `pickguard hash`, `sign`, `verify`.

use crate::cli::{HashArgs, ModelFiles, PlainFormat as Format, SignArgs, VerifyArgs};
use anyhow::{Context, Result, bail};
use pickguard_sign::{HashOptions, Trust, VerifyOptions, VerifyReport};
use std::path::{Path, PathBuf};

pub fn hash_options(f: &ModelFiles) -> HashOptions {
    HashOptions {
        ignore_paths: f
            .ignore_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        include_git_paths: f.no_ignore_git_paths,
        allow_symlinks: f.allow_symlinks,
        shard_size: f.shard_size,
    }
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

pub fn hash(args: HashArgs) -> Result<u8> {
    let m = pickguard_sign::hash_model(&args.path, &hash_options(&args.files))?;
    match args.format {
        Format::Text => {
            for r in &m.resources {
                outln!("{}  {}", hex(&r.digest), r.name)?;
            }
            outln!(
                "{}  (root digest of {} file(s))",
                hex(&m.root_digest()),
                m.resources.len()
            )?;
        }
        _ => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": m.model_name, "root_digest": hex(&m.root_digest()), "hash_type": "sha256",
                "ignore_paths": m.ignore_paths, "resources": m.resources
            }))?
        )?,
    }
    Ok(0)
}

pub fn sign(args: SignArgs) -> Result<u8> {
    let key = read(&args.private_key)?;
    let opts = hash_options(&args.files);
    let m = match &args.signing_cert {
        None => pickguard_sign::sign(&args.path, &key, &args.signature, &opts)?,
        Some(cert) => {
            let chain = args
                .cert_chain
                .iter()
                .map(|p| read(p))
                .collect::<Result<Vec<_>>>()?;
            pickguard_sign::sign_with_certificate(
                &args.path,
                &key,
                &read(cert)?,
                &chain,
                &args.signature,
                &opts,
            )?
        }
    };
    let files: std::collections::BTreeSet<&str> = m
        .resources
        .iter()
        .map(|r| {
            if m.shard_size.is_some() {
                r.name.rsplitn(3, ':').nth(2).unwrap_or(&r.name)
            } else {
                r.name.as_str()
            }
        })
        .collect();
    eprintln!(
        "signed {} file(s) of {}; signature written to {}",
        files.len(),
        args.path.display(),
        args.signature.display()
    );
    Ok(0)
}

/// The trust for verification: a public key or certificate anchors.
pub fn trust(public_key: Option<&PathBuf>, cert_chain: &[PathBuf]) -> Result<Trust> {
    match (public_key, cert_chain.is_empty()) {
        (Some(k), true) => Ok(Trust::PublicKey(read(k)?)),
        (None, false) => Ok(Trust::CertificateChain(
            cert_chain.iter().map(|p| read(p)).collect::<Result<_>>()?,
        )),
        (Some(_), false) => bail!("give --public-key or --cert-chain, not both"),
        (None, true) => {
            bail!("give --public-key (key-signed) or --cert-chain (certificate-signed)")
        }
    }
}

/// Verify and return the report (shared with `scan --verify-signature`).
pub fn verify_report(
    model: &Path,
    signature: &Path,
    trust: &Trust,
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    let bundle = read(signature)?;
    Ok(pickguard_sign::verify(
        model,
        &bundle,
        trust,
        Some(signature),
        opts,
    )?)
}

/// One line per problem, for people.
pub fn describe(r: &VerifyReport) -> Vec<String> {
    let mut out: Vec<String> = r.problems.clone();
    out.extend(r.changed.iter().map(|f| format!("changed: {f}")));
    out.extend(r.added.iter().map(|f| format!("added (not signed): {f}")));
    out.extend(r.removed.iter().map(|f| format!("removed: {f}")));
    out
}

pub fn verify(args: VerifyArgs) -> Result<u8> {
    let opts = VerifyOptions {
        hash: hash_options(&args.files),
        ignore_unsigned_files: args.ignore_unsigned_files,
    };
    let t = trust(args.trust.public_key.as_ref(), &args.trust.cert_chain)?;
    let r = verify_report(&args.path, &args.signature, &t, &opts)?;
    match args.format {
        Format::Text => {
            if r.ok {
                outln!("verified: {} file(s) match the signature", r.files_checked)?;
            } else {
                outln!("verification FAILED for {}", args.path.display())?;
                for line in describe(&r) {
                    outln!("  {line}")?;
                }
            }
        }
        _ => outln!("{}", serde_json::to_string_pretty(&r)?)?,
    }
    Ok(if r.ok { 0 } else { 1 })
}
