//! Opening a connection to a host: TCP with `connect_timeout` and TCP_NODELAY, then TLS with
//! ALPN when the cluster has TLS.

use super::cluster::{Cluster, Host, HostProtocol};
use super::error::UpstreamError;
use super::tls;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A connection to a host, in the clear or over TLS.
#[derive(Debug)]
pub enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

/// An established connection and what ALPN chose on it (`None`: in the clear, or the server
/// picked nothing).
#[derive(Debug)]
pub struct Connected {
    /// The byte stream.
    pub stream: UpstreamStream,
    /// The protocol ALPN negotiated.
    pub alpn: Option<HostProtocol>,
}

/// Connects to `host` for a pool within the cluster's `connect_timeout`, counting
/// `cx_connect_fail` and `cx_connect_timeout`.
pub async fn connect(cluster: &Cluster, host: &Host) -> Result<Connected, UpstreamError> {
    let result = establish(cluster, host).await;
    if let Err(error) = &result {
        cluster.stats.cx_connect_fail.inc();
        if matches!(error, UpstreamError::ConnectTimeout { .. }) {
            cluster.stats.cx_connect_timeout.inc();
        }
    }
    result
}

/// Connects to `host` within the cluster's `connect_timeout` without counting anything (the
/// health checker's connections are not the pools').
pub async fn establish(cluster: &Cluster, host: &Host) -> Result<Connected, UpstreamError> {
    let attempt = async {
        let tcp = super::mark::connect_tcp(host.addr).await.map_err(|e| {
            UpstreamError::ConnectFailed {
                cluster: cluster.name().to_owned(),
                host: host.addr.to_string(),
                reason: e.to_string(),
            }
        })?;
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, host = %host.addr, "setting TCP_NODELAY");
        }
        let Some(config) = &cluster.tls else {
            return Ok(Connected {
                stream: UpstreamStream::Plain(tcp),
                alpn: None,
            });
        };
        let sni = cluster
            .spec
            .tls
            .as_ref()
            .and_then(|spec| spec.sni.as_deref());
        let name = tls::server_name(sni, host.addr.ip());
        let stream = TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| UpstreamError::Tls {
                cluster: cluster.name().to_owned(),
                host: host.addr.to_string(),
                reason: e.to_string(),
            })?;
        let alpn = match stream.get_ref().1.alpn_protocol() {
            Some(tls::ALPN_H2) => Some(HostProtocol::Http2),
            Some(tls::ALPN_HTTP1) => Some(HostProtocol::Http1),
            _ => None,
        };
        Ok(Connected {
            stream: UpstreamStream::Tls(Box::new(stream)),
            alpn,
        })
    };
    match tokio::time::timeout(cluster.spec.connect_timeout, attempt).await {
        Ok(Ok(connected)) => {
            tracing::debug!(cluster = %cluster.name(), host = %host.addr, "connected");
            Ok(connected)
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "connect failed");
            Err(error)
        }
        Err(_) => Err(UpstreamError::ConnectTimeout {
            cluster: cluster.name().to_owned(),
            host: host.addr.to_string(),
        }),
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
}
