//! The admin listener: `/ready`, `/stats/prometheus`, `/config_dump`, `/clusters`, and
//! `POST /reload`.
//!
//! It runs on the main runtime, apart from the workers, so it answers even when they are busy.

use crate::body::{self, Body};
use crate::reload::{Reloader, Trigger};
use crate::stats::Stats;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

/// What the admin endpoints show.
pub struct Admin {
    /// The running config snapshot, and how to reload it.
    reloader: Arc<Reloader>,
    ready: AtomicBool,
}

impl Admin {
    /// Admin over the config `reloader` runs; not ready until [`Admin::set_ready`].
    pub fn new(reloader: Arc<Reloader>) -> Arc<Admin> {
        Arc::new(Admin {
            reloader,
            ready: AtomicBool::new(false),
        })
    }

    /// Marks the proxy as serving (true) or draining (false), as `/ready` reports it.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Serves admin requests on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.respond(&request).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "admin connection");
                }
            });
        }
    }

    /// Answers on `listener` while weir initializes (its remote Wasm modules are fetched
    /// before any listener starts): `/ready` is 503 `INITIALIZING`, as Envoy's, and
    /// `/stats/prometheus` already shows the fetch stats; anything else is 503 too. Each
    /// connection is closed after one answer, so no client stays on it after the real admin
    /// ([`Admin::serve`]) takes the listener over. Runs until dropped.
    pub async fn serve_initializing(listener: &TcpListener) -> Infallible {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let response = if request.uri().path() == "/stats/prometheus" {
                        text(StatusCode::OK, Stats::global().prometheus_text())
                    } else {
                        text(StatusCode::SERVICE_UNAVAILABLE, "INITIALIZING\n".into())
                    };
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// `/reload` (which waits for the reload), else [`Admin::handle`].
    async fn respond(&self, request: &Request<Incoming>) -> Response<Body> {
        if request.uri().path() != "/reload" {
            return self.handle(request);
        }
        if request.method() != Method::POST {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload\n".into());
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let (status, json) = match self.reloader.reload(Trigger::Admin).await {
            Ok(outcome) => (StatusCode::OK, outcome.to_json()),
            Err(error) => (
                error.status(),
                serde_json::json!({ "result": "failure", "error": error.to_string() }),
            ),
        };
        let mut response = text(status, format!("{json}\n"));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    fn handle(&self, request: &Request<Incoming>) -> Response<Body> {
        let path = request.uri().path();
        match (request.method(), path) {
            (&Method::GET | &Method::HEAD, "/ready") => {
                if self.ready.load(Ordering::Acquire) {
                    text(StatusCode::OK, "LIVE\n".into())
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n".into())
                }
            }
            (&Method::GET, "/stats/prometheus") => {
                let mut response = text(StatusCode::OK, Stats::global().prometheus_text());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            (&Method::GET, "/config_dump") => {
                let snapshot = self.reloader.current();
                let dump = serde_json::json!({
                    "source": snapshot.config.source,
                    "generation": snapshot.generation,
                    "bootstrap": snapshot.config.dump,
                });
                let json = serde_json::to_string_pretty(&dump)
                    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
                let mut response = text(StatusCode::OK, json);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            (&Method::GET, "/clusters") => text(
                StatusCode::OK,
                self.reloader.current().clusters.clusters_text(),
            ),
            (&Method::GET, "/") => text(
                StatusCode::OK,
                "weir admin\n  /ready\n  /stats/prometheus\n  /config_dump\n  /clusters\n  POST /reload\n"
                    .into(),
            ),
            _ => text(StatusCode::NOT_FOUND, format!("no admin endpoint {path}\n")),
        }
    }
}

fn text(status: StatusCode, content: String) -> Response<Body> {
    let mut response = Response::new(body::full(content));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
