//! TLS: the transport sockets (`DownstreamTlsContext`, `UpstreamTlsContext`, QUIC's), and
//! their reading into certificate files checked to load ([`super::pem`]).

use super::cluster_spec as spec;
use super::common::DataSource;
use super::typed::{RawExtension, split_typed, type_names, typed, unsupported};
use super::{FieldError, pem};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;

/// `extensions.transport_sockets.tls.v3.DownstreamTlsContext`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DownstreamTlsContext {
    /// Certificates and ALPN.
    #[serde(default)]
    pub common_tls_context: CommonTlsContext,
    /// Ask clients for a certificate and refuse those without one.
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// `extensions.transport_sockets.tls.v3.UpstreamTlsContext`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsContext {
    /// CA, client certificate and ALPN.
    #[serde(default)]
    pub common_tls_context: CommonTlsContext,
    /// SNI to send.
    #[serde(default)]
    pub sni: Option<String>,
}

/// `common_tls_context`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CommonTlsContext {
    /// Certificate chains with their keys.
    #[serde(default, deserialize_with = "super::lenient::one_or_many")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Peer certificate validation.
    #[serde(default)]
    pub validation_context: Option<CertificateValidationContext>,
    /// ALPN protocols offered (client) or accepted (server), in preference order.
    #[serde(default)]
    pub alpn_protocols: Vec<String>,
}

/// `tls_certificates[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// PEM certificate chain.
    pub certificate_chain: DataSource,
    /// PEM private key.
    pub private_key: DataSource,
}

/// `validation_context`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CertificateValidationContext {
    /// PEM CA bundle.
    #[serde(default)]
    pub trusted_ca: Option<DataSource>,
}

/// `envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicDownstreamTransport {
    /// Certificates (picked by SNI) and client validation, as for TLS over TCP.
    pub downstream_tls_context: DownstreamTlsContext,
    /// 0-RTT (accepted; weir does not take early data).
    #[serde(default)]
    pub enable_early_data: Option<bool>,
}

/// `envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuicUpstreamTransport {
    /// SNI, CA and client certificate, as for TLS over TCP.
    pub upstream_tls_context: UpstreamTlsContext,
}

/// `transport_socket`.
#[derive(Debug, Clone)]
pub struct TransportSocket {
    /// The socket's `name` (e.g. `envoy.transport_sockets.tls`).
    pub name: String,
    /// What it is.
    pub config: TransportSocketConfig,
}

/// The transport sockets weir implements.
#[derive(Debug, Clone)]
pub enum TransportSocketConfig {
    /// TLS on a listener's filter chain.
    DownstreamTls(Box<DownstreamTlsContext>),
    /// TLS to a cluster's hosts.
    UpstreamTls(Box<UpstreamTlsContext>),
    /// QUIC on a listener's filter chain (HTTP/3 listeners).
    QuicDownstream(Box<QuicDownstreamTransport>),
    /// QUIC to a cluster's hosts (HTTP/3 clusters).
    QuicUpstream(Box<QuicUpstreamTransport>),
}

impl<'de> Deserialize<'de> for TransportSocket {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawExtension::deserialize(deserializer)?;
        let (type_name, value) =
            split_typed(&raw.name, raw.typed_config).map_err(D::Error::custom)?;
        let config = match type_name.as_str() {
            type_names::DOWNSTREAM_TLS => TransportSocketConfig::DownstreamTls(Box::new(
                typed(value).map_err(D::Error::custom)?,
            )),
            type_names::UPSTREAM_TLS => TransportSocketConfig::UpstreamTls(Box::new(
                typed(value).map_err(D::Error::custom)?,
            )),
            type_names::QUIC_DOWNSTREAM => TransportSocketConfig::QuicDownstream(Box::new(
                typed(value).map_err(D::Error::custom)?,
            )),
            type_names::QUIC_UPSTREAM => TransportSocketConfig::QuicUpstream(Box::new(
                typed(value).map_err(D::Error::custom)?,
            )),
            other => {
                return Err(D::Error::custom(unsupported(
                    "transport socket",
                    other,
                    &[
                        type_names::DOWNSTREAM_TLS,
                        type_names::UPSTREAM_TLS,
                        type_names::QUIC_DOWNSTREAM,
                        type_names::QUIC_UPSTREAM,
                    ],
                )));
            }
        };
        Ok(TransportSocket {
            name: raw.name,
            config,
        })
    }
}

/// Downstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamTls {
    /// Certificate chains and keys (PEM files); the first is the default, others are picked by
    /// SNI.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// ALPN protocols accepted, in preference order.
    pub alpn_protocols: Vec<String>,
    /// CA bundle for client certificates.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate.
    pub require_client_certificate: bool,
}

/// The file of a TLS `DataSource` at `path` (only `filename` is taken for TLS material).
fn file_of(source: &DataSource, path: &str) -> Result<PathBuf, FieldError> {
    match (
        &source.filename,
        &source.inline_string,
        &source.inline_bytes,
    ) {
        (Some(file), None, None) => Ok(PathBuf::from(file)),
        _ => Err(FieldError::new(
            path,
            "TLS material must be given as {filename: PATH}; inline_string and inline_bytes are not supported here",
        )),
    }
}

/// The `validation_context.trusted_ca` file of the TLS context at `path`, checked to hold
/// usable CA certificates.
fn trusted_ca(common: &CommonTlsContext, path: &str) -> Result<Option<PathBuf>, FieldError> {
    let Some(ca) = common
        .validation_context
        .as_ref()
        .and_then(|v| v.trusted_ca.as_ref())
    else {
        return Ok(None);
    };
    let field = format!("{path}.common_tls_context.validation_context.trusted_ca");
    let file = file_of(ca, &field)?;
    pem::check_ca(&file, &field)?;
    Ok(Some(file))
}

/// Reads a listener's TLS context at `path`, checking each certificate and key loads.
pub fn downstream_tls(
    context: &DownstreamTlsContext,
    path: &str,
) -> Result<DownstreamTls, FieldError> {
    let common = &context.common_tls_context;
    if common.tls_certificates.is_empty() {
        return Err(FieldError::new(
            format!("{path}.common_tls_context.tls_certificates"),
            "a TLS listener needs at least one certificate_chain + private_key",
        ));
    }
    let mut certificates = Vec::new();
    for (i, cert) in common.tls_certificates.iter().enumerate() {
        let cert_path = format!("{path}.common_tls_context.tls_certificates[{i}]");
        let chain = file_of(
            &cert.certificate_chain,
            &format!("{cert_path}.certificate_chain"),
        )?;
        let key = file_of(&cert.private_key, &format!("{cert_path}.private_key"))?;
        pem::check_certificate(&chain, &key, &cert_path)?;
        certificates.push((chain, key));
    }
    let client_ca = trusted_ca(common, path)?;
    if context.require_client_certificate && client_ca.is_none() {
        return Err(FieldError::new(
            format!("{path}.require_client_certificate"),
            "requiring client certificates needs common_tls_context.validation_context.trusted_ca",
        ));
    }
    Ok(DownstreamTls {
        certificates,
        alpn_protocols: common.alpn_protocols.clone(),
        client_ca,
        require_client_certificate: context.require_client_certificate,
    })
}

/// Reads a cluster's TLS context at `path`, checking its client certificate and CA load.
pub(super) fn upstream_tls(
    context: &UpstreamTlsContext,
    path: &str,
) -> Result<spec::UpstreamTlsSpec, FieldError> {
    let common = &context.common_tls_context;
    let (cert_chain_file, private_key_file) = match common.tls_certificates.as_slice() {
        [] => (None, None),
        [cert] => {
            let cert_path = format!("{path}.common_tls_context.tls_certificates[0]");
            (
                Some(file_of(
                    &cert.certificate_chain,
                    &format!("{cert_path}.certificate_chain"),
                )?),
                Some(file_of(
                    &cert.private_key,
                    &format!("{cert_path}.private_key"),
                )?),
            )
        }
        _ => {
            return Err(FieldError::new(
                format!("{path}.common_tls_context.tls_certificates"),
                "an upstream TLS context takes at most one client certificate",
            ));
        }
    };
    if let (Some(chain), Some(key)) = (&cert_chain_file, &private_key_file) {
        let cert_path = format!("{path}.common_tls_context.tls_certificates[0]");
        pem::check_certificate(chain, key, &cert_path)?;
    }
    let ca_file = trusted_ca(common, path)?;
    Ok(spec::UpstreamTlsSpec {
        sni: context.sni.clone(),
        ca_file,
        cert_chain_file,
        private_key_file,
        alpn_protocols: common.alpn_protocols.clone(),
    })
}
