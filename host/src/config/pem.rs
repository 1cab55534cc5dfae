//! TLS material from PEM files: the one place certificates, private keys and CA bundles are
//! read and parsed, for `weir validate` (every file a config names is checked there) and for
//! the listener and upstream TLS setups that run with them.

use super::FieldError;
use super::file::{FileError, MAX_PEM_BYTES, read_limited};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a PEM file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// It cannot be read (see [`read_limited`]).
    #[error(transparent)]
    File(#[from] FileError),
    /// It holds no usable item of the kind expected, or a broken one.
    #[error("{}: {what}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl PemError {
    fn invalid(path: &Path, what: impl std::fmt::Display) -> Self {
        PemError::Invalid {
            path: path.into(),
            what: what.to_string(),
        }
    }
}

/// Every certificate of the PEM file at `path` (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read_limited(path, MAX_PEM_BYTES)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| PemError::invalid(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PemError::invalid(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The first private key of the PEM file at `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read_limited(path, MAX_PEM_BYTES)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| PemError::invalid(path, format!("bad PEM: {e}")))?
        .ok_or_else(|| PemError::invalid(path, "no PRIVATE KEY in the file"))
}

/// The trust anchors of the CA bundle at `path`: each certificate must be one rustls can use.
pub fn root_store(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| PemError::invalid(path, format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A certificate chain and its key, checked to belong together (the key signs for the
/// chain's first certificate). `chain_file` names the pair in the error.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    chain_file: &Path,
) -> Result<CertifiedKey, PemError> {
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        PemError::invalid(
            chain_file,
            format!("certificate and private key do not match: {e}"),
        )
    })
}

/// Checks, for `validate` and every load, the certificate chain at `chain` and the private key
/// at `key` of the `tls_certificates[]` entry at `field`: both read, parse and match. An error
/// names `{field}.certificate_chain.filename`, `{field}.private_key.filename` or `{field}`.
pub(super) fn check_certificate(chain: &Path, key: &Path, field: &str) -> Result<(), FieldError> {
    let certs = certificates(chain)
        .map_err(|e| FieldError::new(format!("{field}.certificate_chain.filename"), e))?;
    let key = private_key(key)
        .map_err(|e| FieldError::new(format!("{field}.private_key.filename"), e))?;
    certified_key(certs, key, chain).map_err(|e| FieldError::new(field, e))?;
    Ok(())
}

/// Checks the CA bundle at `ca` of the `trusted_ca` at `field`: it reads and every certificate
/// in it is a usable trust anchor. An error names `{field}.filename`.
pub(super) fn check_ca(ca: &Path, field: &str) -> Result<(), FieldError> {
    root_store(ca).map_err(|e| FieldError::new(format!("{field}.filename"), e))?;
    Ok(())
}

/// The rustls crypto provider weir uses everywhere (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(file: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/upstream/testdata")
            .join(file)
    }

    #[test]
    fn reads_the_test_certificate_and_key_as_a_pair() {
        let chain = certificates(&testdata("cert.pem")).unwrap();
        let key = private_key(&testdata("key.pem")).unwrap();
        assert!(certified_key(chain, key, &testdata("cert.pem")).is_ok());
        assert!(root_store(&testdata("ca.pem")).is_ok());
    }

    #[test]
    fn a_key_is_not_a_certificate() {
        let error = certificates(&testdata("key.pem")).unwrap_err().to_string();
        assert!(error.contains("no CERTIFICATE"), "{error}");
        let error = private_key(&testdata("cert.pem")).unwrap_err().to_string();
        assert!(error.contains("no PRIVATE KEY"), "{error}");
    }

    #[test]
    fn dev_zero_is_refused_without_reading() {
        let error = certificates(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }
}
