//! h3load: a small HTTP/3 load generator (no h3 load generator works on these machines).
//!
//! `h3load [-c CONNS] [-m STREAMS] [-d SECONDS] [--insecure | --ca FILE] [--sni NAME] URL`
//!
//! Opens CONNS QUIC connections to the URL's host:port and keeps STREAMS GET requests in
//! flight on each for SECONDS (each connection a task, each stream slot a loop: request, read
//! the whole response, repeat). Prints one line:
//! `h3load: requests=N errors=E seconds=S rps=R p50_us=A p99_us=B` (latencies nearest rank over
//! every completed request). Bounded: at most 60 s, 64 connections, 1000 streams each.

use bytes::{Buf, Bytes};
use quinn::crypto::rustls::QuicClientConfig;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    conns: usize,
    streams: usize,
    seconds: u64,
    insecure: bool,
    ca: Option<String>,
    sni: Option<String>,
    url: http::Uri,
}

fn usage(message: &str) -> ExitCode {
    eprintln!("h3load: {message}");
    eprintln!(
        "usage: h3load [-c CONNS] [-m STREAMS] [-d SECONDS] [--insecure | --ca FILE] [--sni NAME] https://HOST:PORT/PATH"
    );
    ExitCode::from(2)
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        conns: 2,
        streams: 16,
        seconds: 5,
        insecure: false,
        ca: None,
        sni: None,
        url: http::Uri::default(),
    };
    let mut url = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-c" => args.conns = value("-c")?.parse().map_err(|_| "-c: a number")?,
            "-m" => args.streams = value("-m")?.parse().map_err(|_| "-m: a number")?,
            "-d" => args.seconds = value("-d")?.parse().map_err(|_| "-d: seconds")?,
            "--insecure" => args.insecure = true,
            "--ca" => args.ca = Some(value("--ca")?),
            "--sni" => args.sni = Some(value("--sni")?),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => {
                url = Some(
                    other
                        .parse::<http::Uri>()
                        .map_err(|e| format!("URL: {e}"))?,
                )
            }
        }
    }
    args.url = url.ok_or("a URL is required")?;
    if !(1..=64).contains(&args.conns)
        || !(1..=1000).contains(&args.streams)
        || !(1..=60).contains(&args.seconds)
    {
        return Err("bounds: -c 1..64, -m 1..1000, -d 1..60".into());
    }
    if !args.insecure && args.ca.is_none() {
        return Err("give --ca FILE or --insecure".into());
    }
    Ok(args)
}

/// Accepts any server certificate (benchmarks against a self-signed proxy), still checking
/// handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(args: &Args) -> Result<quinn::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let mut tls = match &args.ca {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|e| format!("{ca}: {e}"))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots
                    .add(cert.map_err(|e| format!("{ca}: {e}"))?)
                    .map_err(|e| format!("{ca}: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// What one stream slot saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
}

async fn one_request(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    url: &http::Uri,
) -> Result<(), String> {
    let request = http::Request::get(url.clone())
        .body(())
        .map_err(|e| e.to_string())?;
    let mut stream = send
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    stream.finish().await.map_err(|e| e.to_string())?;
    let response = stream.recv_response().await.map_err(|e| e.to_string())?;
    while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
        chunk.advance(chunk.remaining());
    }
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", response.status()))
    }
}

async fn connection(
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    name: String,
    url: http::Uri,
    streams: usize,
    until: Instant,
) -> Result<Vec<Tally>, String> {
    let connecting = endpoint.connect(addr, &name).map_err(|e| e.to_string())?;
    let quic = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| "QUIC handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic))
        .await
        .map_err(|e| e.to_string())?;
    let drive = tokio::spawn(async move { driver.wait_idle().await });
    let mut slots = Vec::new();
    for _ in 0..streams {
        let mut send = send.clone();
        let url = url.clone();
        slots.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < until {
                let started = Instant::now();
                let left = until.saturating_duration_since(started) + Duration::from_secs(2);
                match tokio::time::timeout(left, one_request(&mut send, &url)).await {
                    Ok(Ok(())) => tally
                        .latencies_us
                        .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)),
                    _ => tally.errors += 1,
                }
            }
            tally
        }));
    }
    let mut tallies = Vec::new();
    for slot in slots {
        tallies.push(slot.await.map_err(|e| e.to_string())?);
    }
    drop(send);
    drive.abort();
    Ok(tallies)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => return usage(&message),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage(&format!("runtime: {e}")),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("h3load: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let authority = args
        .url
        .authority()
        .ok_or("the URL needs host:port")?
        .clone();
    let port = authority.port_u16().unwrap_or(443);
    let addr = (authority.host(), port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the host resolves to nothing")?;
    let name = args
        .sni
        .clone()
        .unwrap_or_else(|| authority.host().to_owned());
    let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().map_err(|_| "addr")?)
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(client_config(&args)?);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.conns {
        tasks.push(tokio::spawn(connection(
            endpoint.clone(),
            addr,
            name.clone(),
            args.url.clone(),
            args.streams,
            until,
        )));
    }
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    for task in tasks {
        match task.await {
            Ok(Ok(tallies)) => {
                for tally in tallies {
                    latencies.extend(tally.latencies_us);
                    errors += tally.errors;
                }
            }
            Ok(Err(message)) => {
                eprintln!("h3load: connection failed: {message}");
                errors += 1;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "h3load: requests={} errors={} seconds={:.2} rps={:.1} p50_us={} p99_us={}",
        latencies.len(),
        errors,
        seconds,
        latencies.len() as f64 / seconds.max(0.001),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
    );
    endpoint.close(0u32.into(), b"done");
    Ok(())
}
