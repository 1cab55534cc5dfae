//! A self-signed certificate made at test time.

use std::path::{Path, PathBuf};

/// PEM files of a self-signed certificate for `localhost` and `127.0.0.1`.
pub struct TlsFiles {
    /// Certificate chain (one certificate).
    pub cert: PathBuf,
    /// PKCS#8 private key.
    pub key: PathBuf,
    /// The certificate in DER, to trust it in a rustls client.
    pub cert_der: Vec<u8>,
}

/// Generates the certificate and writes `cert.pem` and `key.pem` into `dir`.
pub fn self_signed(dir: &Path) -> TlsFiles {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen self-signed certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert.pem");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key.pem");
    TlsFiles {
        cert,
        key,
        cert_der: ck.cert.der().to_vec(),
    }
}
