//! The registry side of a pull: HTTP/1.1 GETs of the distribution API (hyper over tokio and
//! rustls), every body read with a size limit, redirects followed a bounded number of times,
//! and the two auth schemes registries use: Bearer tokens from the registry's token service
//! (Docker Hub, ghcr.io, Harbor, ...) and Basic (a registry with htpasswd auth).
//!
//! Plain HTTP is spoken only to loopback hosts (see [`super::reference`]); a redirect or token
//! realm to `http://` elsewhere is refused. HTTPS trusts the system CA bundle
//! (`$SSL_CERT_FILE`, else Debian's `/etc/ssl/certs/ca-certificates.crt`).

use super::OciError;
use super::credentials::Credentials;
use super::reference::{Reference, is_loopback_authority};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// Redirects followed for one request (registries redirect blob GETs to a CDN once).
const MAX_REDIRECTS: usize = 5;
/// Most bytes of a token service's answer (a JWT is a few KiB).
const MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// Most bytes of an error answer kept for the message.
const MAX_ERROR_BODY: usize = 4096;

/// One registry session: the reference's repository, the credentials for its registry, and
/// the `Authorization` earned by the first challenge (reused for the following requests).
pub struct Registry {
    reference: Reference,
    credentials: Option<Credentials>,
    authorization: Option<String>,
}

/// A successful answer.
pub struct Answer {
    /// Its body (at most the limit asked for).
    pub body: Bytes,
}

impl Registry {
    /// A session for `reference`'s repository.
    pub fn new(reference: Reference, credentials: Option<Credentials>) -> Registry {
        Registry {
            reference,
            credentials,
            authorization: None,
        }
    }

    /// `GET {api_base}/{path}` with `accept`, answering a 401 challenge once; the body must
    /// be at most `limit` bytes.
    pub async fn get(
        &mut self,
        path: &str,
        accept: &str,
        limit: usize,
    ) -> Result<Answer, OciError> {
        let url = format!("{}/{path}", self.reference.api_base());
        let first = follow(&url, accept, self.authorization.as_deref(), limit).await?;
        let challenge = match first {
            Outcome::Ok(answer) => return Ok(answer),
            Outcome::Status(status, _, body) if status != StatusCode::UNAUTHORIZED => {
                return Err(status_error(&url, status, &body));
            }
            Outcome::Status(_, headers, _) => headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_default(),
        };
        self.authorization = Some(self.answer_challenge(&challenge).await?);
        match follow(&url, accept, self.authorization.as_deref(), limit).await? {
            Outcome::Ok(answer) => Ok(answer),
            Outcome::Status(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _, _) => {
                Err(self.unauthorized("the registry refused the credentials"))
            }
            Outcome::Status(status, _, body) => Err(status_error(&url, status, &body)),
        }
    }

    fn unauthorized(&self, why: &str) -> OciError {
        let credentials = match &self.credentials {
            Some(c) => format!("as user {:?} from the docker config", c.username),
            None => "anonymously (no docker config entry for this registry)".to_owned(),
        };
        OciError::Unauthorized {
            registry: self.reference.registry.clone(),
            why: format!("{why}; pulled {credentials}"),
        }
    }

    /// The `Authorization` value that answers `challenge` (a `WWW-Authenticate` value).
    async fn answer_challenge(&self, challenge: &str) -> Result<String, OciError> {
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            return match &self.credentials {
                Some(credentials) => Ok(credentials.basic()),
                None => Err(self.unauthorized("the registry asks for a user and password")),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.unauthorized(&format!("unsupported auth challenge {challenge:?}")));
        }
        let Some(realm) = params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v) else {
            return Err(self.unauthorized("the Bearer challenge has no realm"));
        };
        let mut url = realm.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
            url.push_str(&format!("service={}&", percent_encode(service)));
        }
        let scope = format!("repository:{}:pull", self.reference.repository);
        url.push_str(&format!("scope={}", percent_encode(&scope)));
        let basic = self.credentials.as_ref().map(Credentials::basic);
        let answer =
            match follow(&url, "application/json", basic.as_deref(), MAX_TOKEN_BYTES).await? {
                Outcome::Ok(answer) => answer,
                Outcome::Status(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _, _) => {
                    return Err(self.unauthorized("the token service refused the credentials"));
                }
                Outcome::Status(status, _, body) => return Err(status_error(&url, status, &body)),
            };
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&answer.body)
            .map_err(|e| OciError::Registry(format!("token service {realm}: not a token: {e}")))?;
        match token.token.or(token.access_token) {
            Some(token) if !token.is_empty() => Ok(format!("Bearer {token}")),
            _ => Err(OciError::Registry(format!(
                "token service {realm}: the answer holds no token"
            ))),
        }
    }
}

/// How one GET (after redirects) ended.
enum Outcome {
    /// 2xx, with the body.
    Ok(Answer),
    /// Another status, its headers and the start of its body.
    Status(StatusCode, HeaderMap, Bytes),
}

fn status_error(url: &str, status: StatusCode, body: &[u8]) -> OciError {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let detail = if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.chars().take(300).collect::<String>())
    };
    let what = if status == StatusCode::NOT_FOUND {
        " (no such repository, tag, manifest or blob)"
    } else {
        ""
    };
    OciError::Registry(format!("GET {url} answered {status}{what}{detail}"))
}

/// GETs `url`, following redirects; `authorization` is sent only to the first URL's host.
async fn follow(
    url: &str,
    accept: &str,
    authorization: Option<&str>,
    limit: usize,
) -> Result<Outcome, OciError> {
    let mut uri: Uri = url
        .parse()
        .map_err(|e| OciError::Registry(format!("bad URL {url:?}: {e}")))?;
    let origin = uri.authority().map(|a| a.as_str().to_owned());
    for _ in 0..=MAX_REDIRECTS {
        let same_host = uri.authority().map(|a| a.as_str()) == origin.as_deref();
        let auth = authorization.filter(|_| same_host);
        let (status, headers, body) = get_once(&uri, accept, auth, limit).await?;
        if status.is_redirection()
            && let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok())
        {
            uri = resolve(&uri, location)?;
            continue;
        }
        if status.is_success() {
            return Ok(Outcome::Ok(Answer { body }));
        }
        return Ok(Outcome::Status(status, headers, body));
    }
    Err(OciError::Registry(format!(
        "GET {url}: more than {MAX_REDIRECTS} redirects"
    )))
}

/// `location` (absolute, or a path on `base`'s host) as a URI.
fn resolve(base: &Uri, location: &str) -> Result<Uri, OciError> {
    let bad = |e: &dyn std::fmt::Display| {
        OciError::Registry(format!("bad redirect location {location:?}: {e}"))
    };
    if location.starts_with('/') && !location.starts_with("//") {
        let scheme = base.scheme_str().unwrap_or("https");
        let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
        return format!("{scheme}://{authority}{location}")
            .parse()
            .map_err(|e| bad(&e));
    }
    location.parse().map_err(|e| bad(&e))
}

/// One GET on a new connection. A 2xx body over `limit` is an error; other bodies are kept to
/// their first [`MAX_ERROR_BODY`] bytes.
async fn get_once(
    uri: &Uri,
    accept: &str,
    authorization: Option<&str>,
    limit: usize,
) -> Result<(StatusCode, HeaderMap, Bytes), OciError> {
    let scheme = uri.scheme_str().unwrap_or("");
    let Some(authority) = uri.authority().map(|a| a.as_str().to_owned()) else {
        return Err(OciError::Registry(format!("URL {uri} has no host")));
    };
    let tls = match scheme {
        "https" => true,
        "http" if is_loopback_authority(&authority) => false,
        "http" => {
            return Err(OciError::Registry(format!(
                "refusing plain HTTP to {authority}: only a loopback registry is spoken to without TLS"
            )));
        }
        other => {
            return Err(OciError::Registry(format!(
                "URL {uri}: unsupported scheme {other:?}"
            )));
        }
    };
    let host = super::reference::host_of(&authority).to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| OciError::Connect {
            host: authority.clone(),
            why: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::get(path)
        .header(header::HOST, &authority)
        .header(
            header::USER_AGENT,
            concat!("weir/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::ACCEPT, accept);
    if let Some(authorization) = authorization {
        let mut value = HeaderValue::from_str(authorization).map_err(|_| {
            OciError::Registry("credentials hold characters a header cannot".into())
        })?;
        value.set_sensitive(true);
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| OciError::Registry(format!("GET {uri}: {e}")))?;
    if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| OciError::Registry(format!("{host}: not a TLS server name: {e}")))?;
        let stream = tls_connector()?
            .connect(name, tcp)
            .await
            .map_err(|e| OciError::Connect {
                host: authority.clone(),
                why: format!("TLS: {e}"),
            })?;
        exchange(stream, request, uri, limit).await
    } else {
        exchange(tcp, request, uri, limit).await
    }
}

async fn exchange<S>(
    stream: S,
    request: http::Request<Empty<Bytes>>,
    uri: &Uri,
    limit: usize,
) -> Result<(StatusCode, HeaderMap, Bytes), OciError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: &dyn std::fmt::Display| OciError::Registry(format!("GET {uri}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    let driver = tokio::spawn(connection);
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let keep = if status.is_success() {
            limit
        } else {
            MAX_ERROR_BODY
        };
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| failed(&e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if out.len() + data.len() > keep {
                if status.is_success() {
                    return Err(OciError::TooLarge {
                        what: format!("GET {uri}"),
                        limit: limit as u64,
                    });
                }
                out.extend_from_slice(&data[..keep - out.len()]);
                break;
            }
            out.extend_from_slice(&data);
        }
        Ok((status, headers, Bytes::from(out)))
    }
    .await;
    driver.abort();
    result
}

/// The TLS client config for registries: the system CA bundle, ALPN http/1.1.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, OciError> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let bundle = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
        let certs = crate::config::pem::certificates(&bundle)
            .map_err(|e| format!("the CA bundle for registries: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("no usable CA certificate in {}", bundle.display()));
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(crate::config::pem::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    });
    match config {
        Ok(config) => Ok(tokio_rustls::TlsConnector::from(config.clone())),
        Err(why) => Err(OciError::Registry(why.clone())),
    }
}

/// The scheme and `key="value"` parameters of a `WWW-Authenticate` value.
fn parse_challenge(value: &str) -> (String, Vec<(String, String)>) {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    // Bounded by the header's length: each turn consumes at least one character.
    while chars.peek().is_some() {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            val.push(escaped);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if !key.is_empty() {
            params.push((key, val.trim().to_owned()));
        }
    }
    (scheme.to_owned(), params)
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_commas_in_quotes() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            vec![
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:library/x:pull,push".into()),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(params, vec![("realm".into(), "Registry Realm".into())]);
        let (_, params) = parse_challenge("Bearer realm=x, broken");
        assert_eq!(params[0], ("realm".into(), "x".into()));
    }

    #[test]
    fn redirects_resolve_against_the_host() {
        let base: Uri = "http://127.0.0.1:5000/v2/f/blobs/sha256:ab"
            .parse()
            .unwrap_or_default();
        let to = resolve(&base, "/storage/xyz?sig=1").map(|u| u.to_string());
        assert_eq!(
            to.ok().as_deref(),
            Some("http://127.0.0.1:5000/storage/xyz?sig=1")
        );
        let to = resolve(&base, "https://cdn.example.com/b").map(|u| u.to_string());
        assert_eq!(to.ok().as_deref(), Some("https://cdn.example.com/b"));
    }

    #[test]
    fn scope_is_percent_encoded() {
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    #[tokio::test]
    async fn plain_http_only_to_loopback() {
        let uri: Uri = "http://192.0.2.1/v2/".parse().unwrap_or_default();
        let Err(e) = get_once(&uri, "*/*", None, 10).await else {
            panic!("plain HTTP to a remote host is refused before connecting")
        };
        assert!(e.to_string().contains("only a loopback registry"), "{e}");
    }
}
