//! `aegis up --tls`: the showcase's own certificate authority and the
//! certificate its NATS nodes present, made once with `rcgen` (no openssl)
//! and kept in the state directory's `tls/` (keys mode 0600):
//!
//! - `ca.pem`: the CA every client verifies the servers with
//!   (`AEGIS_NATS_TLS_CA`); its key `ca-key.pem` stays in the directory,
//!   unused after signing.
//! - `server.pem` / `server-key.pem`: the nodes' certificate, for
//!   `localhost` and `127.0.0.1`, valid for serving clients and for both
//!   ends of the cluster's routes (mutual TLS between the nodes).
//!
//! With your own CA, put its files at those paths before `aegis up --tls`
//! (all four present are used as they are), or run NATS yourself and point
//! `--nats-url` and `AEGIS_NATS_TLS_CA` at it (docs/security.md).

use std::path::{Path, PathBuf};

use super::write_anew;
use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The showcase's TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM) clients verify the servers with.
    pub ca: PathBuf,
    /// The nodes' certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    fn at(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        }
    }
}

/// The files in `state_dir/tls`, made when any is missing.
///
/// # Errors
/// When a certificate cannot be made or a file written.
pub fn ensure(state_dir: &Path) -> anyhow::Result<TlsFiles> {
    let dir = state_dir.join("tls");
    let files = TlsFiles::at(&dir);
    let ca_key_path = dir.join("ca-key.pem");
    if [&files.ca, &files.cert, &files.key, &ca_key_path]
        .iter()
        .all(|p| p.is_file())
    {
        return Ok(files);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let made = make().context("making the showcase's certificates")?;
    write_anew(&files.ca, &made.ca, 0o644)?;
    write_anew(&ca_key_path, &made.ca_key, 0o600)?;
    write_anew(&files.cert, &made.cert, 0o644)?;
    write_anew(&files.key, &made.key, 0o600)?;
    Ok(files)
}

/// PEM texts of a fresh CA and a node certificate it signed.
struct Made {
    ca: String,
    ca_key: String,
    cert: String,
    key: String,
}

fn make() -> Result<Made, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Aegis showcase CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "aegis-nats");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Routes are mutual TLS: each node is a client of the others.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok(Made {
        ca: ca.pem(),
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The `tls { ... }` block of a node's config (client connections, and with
/// `verify` the routes' mutual TLS).
pub fn server_block(files: &TlsFiles, verify: bool) -> String {
    format!(
        "tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n    ca_file: \"{}\"\n    verify: {verify}\n    timeout: 2\n  }}",
        files.cert.display(),
        files.key.display(),
        files.ca.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_the_files_once_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure(dir.path()).unwrap();
        let ca = std::fs::read_to_string(&files.ca).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&dir.path().join("tls/ca-key.pem")), 0o600);
        // Kept: a second call changes nothing.
        let again = ensure(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&again.ca).unwrap(), ca);
    }
}
