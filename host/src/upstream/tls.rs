//! rustls client configs for upstream TLS, one per cluster.
//!
//! Built once in [`ClusterManager::new`](super::ClusterManager::new) so that a missing or
//! unreadable file is a config error naming the file, never a per-request failure.

use super::error::UpstreamError;
use super::spec::{UpstreamProtocol, UpstreamTlsSpec};
use crate::config::pem;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// ALPN "h2".
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN "h3" (QUIC).
pub const ALPN_H3: &[u8] = b"h3";
/// ALPN "http/1.1".
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Builds the client config of a cluster: trust from `ca_file` (or none, see
/// [`AcceptAnyCertificate`]), the client certificate when given, and ALPN from the spec or,
/// when the spec lists none, from the protocol (auto offers h2 first, then http/1.1).
pub fn client_config(
    cluster: &str,
    spec: &UpstreamTlsSpec,
    protocol: UpstreamProtocol,
) -> Result<Arc<ClientConfig>, UpstreamError> {
    let config_error = |reason: String| UpstreamError::Config {
        cluster: cluster.to_owned(),
        reason,
    };
    let pem_error = |error: pem::PemError| config_error(error.to_string());
    let provider = pem::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS versions: {e}")))?;
    let builder = match &spec.ca_file {
        Some(ca_file) => {
            builder.with_root_certificates(pem::root_store(ca_file).map_err(pem_error)?)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            })),
    };
    let mut config = match (&spec.cert_chain_file, &spec.private_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = pem::certificates(cert_file).map_err(pem_error)?;
            let key = pem::private_key(key_file).map_err(pem_error)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(config_error(
                "a client certificate needs both certificate_chain and private_key".into(),
            ));
        }
    };
    config.alpn_protocols = if spec.alpn_protocols.is_empty() {
        match protocol {
            UpstreamProtocol::Http1 => vec![ALPN_HTTP1.to_vec()],
            UpstreamProtocol::Http2 => vec![ALPN_H2.to_vec()],
            UpstreamProtocol::Auto | UpstreamProtocol::AutoHttp3 => {
                vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]
            }
            UpstreamProtocol::Http3 => vec![ALPN_H3.to_vec()],
        }
    } else {
        spec.alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect()
    };
    Ok(Arc::new(config))
}

/// The name the handshake is made for: the configured SNI, or the host's IP (which rustls
/// does not send as SNI, so no SNI goes out, as in Envoy).
pub fn server_name(sni: Option<&str>, ip: std::net::IpAddr) -> ServerName<'static> {
    sni.and_then(|name| ServerName::try_from(name.to_owned()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
}

/// Used when no CA is configured: any certificate is accepted (Envoy without a validation
/// context does the same), but the handshake signatures are still checked, so the peer must
/// hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_is_an_error_naming_the_file() {
        let spec = UpstreamTlsSpec {
            ca_file: Some("/nonexistent/weir-ca.pem".into()),
            ..Default::default()
        };
        let error = client_config("c", &spec, UpstreamProtocol::Http1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("/nonexistent/weir-ca.pem"), "{error}");
    }

    #[test]
    fn auto_offers_h2_then_http1() {
        let spec = UpstreamTlsSpec::default();
        let config = client_config("c", &spec, UpstreamProtocol::Auto);
        let alpn = config.map(|c| c.alpn_protocols.clone()).unwrap_or_default();
        assert_eq!(alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
}
