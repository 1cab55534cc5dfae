//! Downstream TLS: certificates from PEM files, picked by SNI, ALPN, optional client
//! certificates.

use crate::config::DownstreamTls;
use crate::config::pem::{self, PemError};
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;

/// TLS material that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file cannot be read or parsed.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The material reads, but cannot be used as configured.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the combination.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the acceptor of a TLS listener. Every file is read and checked now, so a bad key
/// stops start-up with its path in the message.
pub fn acceptor(tls: &DownstreamTls) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    Ok(tokio_rustls::TlsAcceptor::from(server_config(tls)?))
}

/// The rustls server config of a listener (TCP or QUIC): certificates picked by SNI, client
/// verification, ALPN from the config.
pub fn server_config(tls: &DownstreamTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = pem::provider();
    let mut keys = Vec::new();
    for (chain, key) in &tls.certificates {
        let certified =
            pem::certified_key(pem::certificates(chain)?, pem::private_key(key)?, chain)?;
        keys.push(Arc::new(certified));
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = pem::root_store(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Invalid {
                path: ca.clone(),
                what: format!("client verifier: {e}"),
            })?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { keys }));
    config.alpn_protocols = tls
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(config))
}

/// Picks the first certificate valid for the client's SNI, else the first one.
#[derive(Debug)]
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|name| {
            let name = ServerName::try_from(name).ok()?;
            self.keys.iter().find(|key| {
                key.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
            })
        });
        by_name.or_else(|| self.keys.first()).cloned()
    }
}
