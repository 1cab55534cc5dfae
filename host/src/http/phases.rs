//! The phases every HTTP stream passes, in one place: [`StreamPhases`] names them (each a
//! method with what it does, when and why), and [`run_stream`] runs them in order, top to
//! bottom, for a stream of any codec. The connection manager implements them
//! ([`super::stream`]); the codecs only hand the request in and write the response out (see
//! [`super::server`], [`super::h3`]).
//!
//! Modelled on Pingora's `ProxyHttp` (a trait of phases with defaults), in the order weir
//! runs them:
//!
//! ```text
//! open log -> accept -> head received -> request filters -> route -> upstream selected
//!          -> upstream request -> forward -> route response head -> response filters
//!          -> response head -> log
//! ```
//!
//! A phase that answers locally ends the way forward there: the answer still gets its
//! route's response headers (where a route was matched), passes back through the response
//! filters that saw the request, gets its response head, and is logged. As Envoy's router
//! (which applies a route's `response_headers_to_*` when the upstream's headers arrive, and
//! its filter manager, which applies them to every local reply once a route is known), the
//! route's rules come before the response filters, so a filter sees and may change them.
//! The route is looked up after the request filters, on the headers as they left them (as
//! Envoy's route cache, cleared by a filter that changes them). The response body streams
//! after [`run_stream`] returns: the codec writes it, and the stream (its accounting, its
//! log line) ends with its last byte (see [`super::tracked`] and
//! [`crate::access_log::http`]).

use super::local_reply::LocalReply;
pub use super::route_headers::MatchedRoute;
use crate::access_log::http::{UpstreamSeen, with_notes};
use crate::body::{self, Body};
use crate::wire::ConnectionInfo;
use http::{HeaderValue, Request, Response};
use std::future::Future;
use std::ops::ControlFlow;

/// What the request filters phase decided.
pub enum Filtered<F> {
    /// On to routing; the filters (`F`) see the response on its way back.
    Continue(Request<Body>, F),
    /// A filter answered (or failed): this is the response, which passes back through the
    /// filters before the one that answered (`F`).
    Answered(Response<Body>, F),
}

/// What the route phase decided.
pub enum Routed<T> {
    /// Answered here, without an upstream (`direct_response`, `redirect`, `require_tls`).
    Answered(Response<Body>),
    /// On to an upstream: what the upstream phases need (`T`).
    Upstream(T),
}

/// The phases of one HTTP stream, in the order [`run_stream`] calls them. Every method but
/// [`StreamPhases::upstream_request`] and [`StreamPhases::forward`] (which only a proxy can
/// say how to do, as Pingora's `upstream_peer`) has a default that lets the stream through
/// untouched; the connection manager's implementation is in [`super::stream`].
pub trait StreamPhases: Sync {
    /// The access log entry opened for the stream, finished when its response body ends.
    type Log: Send;
    /// The request filters that saw the request, which see the response on its way back.
    type ResponseFilters: Send + Default;
    /// What the route phase picked for a stream that goes upstream (the host, the route's
    /// action, the cluster once it is picked). It may borrow the manager's routes.
    type Target<'s>: Send
    where
        Self: 's;
    /// What goes upstream: a request to send, or a tunnel to open.
    type Upstream<'s>: Send
    where
        Self: 's;

    /// **Open log**: first, when the request head has been read, so that every answer,
    /// a refusal included, is logged with the request as it came. Returns the entry (none
    /// without access logs) and the request with its body made the one [`Body`] type, once,
    /// so that no later phase boxes it again.
    fn open_log<B>(
        &self,
        request: Request<B>,
        conn: &ConnectionInfo,
    ) -> (Option<Self::Log>, Request<Body>)
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<body::BoxError>,
    {
        let _ = conn;
        (None, request.map(body::boxed))
    }

    /// **Accept**: the stream (counted when its codec started it) may be refused before
    /// anything is spent on it
    /// (an overloaded proxy). `Break` is the answer, sent as it is: no filter, no response
    /// headers of any virtual host.
    fn accept(&self, conn: &ConnectionInfo) -> ControlFlow<Response<Body>> {
        let _ = conn;
        ControlFlow::Continue(())
    }

    /// **Head received**: the head is checked and normalised (authority, path, header names)
    /// before anything, filters included, sees it. `Break` is the refusal, which gets no
    /// route's response headers (none was matched, as in Envoy).
    fn head_received(
        &self,
        request: &mut Request<Body>,
        conn: &ConnectionInfo,
    ) -> ControlFlow<Response<Body>> {
        let _ = (request, conn);
        ControlFlow::Continue(())
    }

    /// **Request filters**: the HTTP filters (Wasm plugins) see the request head and wrap
    /// its body; a filter may answer instead of the upstream. An answer carries, in its
    /// extensions, the [`MatchedRoute`] of the request as the filters got it (Envoy knows
    /// the route before its filters run), for its route response head.
    fn request_filters(
        &self,
        request: Request<Body>,
        conn: &ConnectionInfo,
    ) -> impl Future<Output = Filtered<Self::ResponseFilters>> + Send {
        let _ = conn;
        async { Filtered::Continue(request, Self::ResponseFilters::default()) }
    }

    /// **Request id**: before routing, the request gets its `x-request-id` (where the
    /// manager generates them), so a local reply's log lines name the id the upstream would
    /// have seen. Returns the id for the debug line of such a reply (`None` where debug
    /// logging is off: nothing reads it then).
    fn request_id(&self, request: &mut Request<Body>) -> Option<HeaderValue> {
        let _ = request;
        None
    }

    /// **Route**: the request is admitted (a host, its header count, a tunnel this listener
    /// takes), then its virtual host and route are found; a route may answer itself.
    fn route<'s>(
        &'s self,
        request: &Request<Body>,
        conn: &ConnectionInfo,
    ) -> Result<Routed<Self::Target<'s>>, LocalReply> {
        let _ = (request, conn);
        Err(LocalReply::NoRoute)
    }

    /// **Upstream selected**: the route's cluster is picked for this request (weighted
    /// clusters, `cluster_header`) and checked (it exists; a tunnel is enabled there).
    fn upstream_selected<'s>(
        &'s self,
        request: &Request<Body>,
        target: Self::Target<'s>,
    ) -> Result<Self::Target<'s>, LocalReply> {
        let _ = request;
        Ok(target)
    }

    /// **Upstream request**: what the upstream gets: the request rewritten for it (path,
    /// host, forwarding headers, its body watched for timeouts), or the tunnel to open.
    fn upstream_request<'s>(
        &'s self,
        request: Request<Body>,
        target: Self::Target<'s>,
        conn: &ConnectionInfo,
    ) -> Result<Self::Upstream<'s>, LocalReply>;

    /// **Forward**: the upstream is asked, under the route's timeout, and its response head
    /// shaped for downstream; a tunnel is opened and answered here.
    fn forward<'s>(
        &'s self,
        upstream: Self::Upstream<'s>,
        conn: &ConnectionInfo,
    ) -> impl Future<Output = Result<Response<Body>, LocalReply>> + Send;

    /// **Local reply**: a phase from route to forward failed; this is the answer.
    fn local_reply(&self, reply: LocalReply) -> Response<Body> {
        reply.into_response()
    }

    /// **Response filters**: the filters that saw the request see the response head, in
    /// reverse order, and wrap its body.
    fn response_filters(
        &self,
        filters: Self::ResponseFilters,
        response: Response<Body>,
    ) -> impl Future<Output = Response<Body>> + Send {
        let _ = filters;
        async { response }
    }

    /// **Route response head**: before the response filters, for every answer of a request
    /// whose route is known (`route`: the upstream's, a local reply after routing, a route's
    /// own answer, a filter's): the route's, its virtual host's and the route
    /// configuration's response header rules. Without a route (no route matched, a refused
    /// head) nothing, as in Envoy.
    fn route_response_head(
        &self,
        route: Option<MatchedRoute>,
        conn: &ConnectionInfo,
        response: Response<Body>,
    ) -> Response<Body> {
        let _ = (route, conn);
        response
    }

    /// **Response head**: last, for every answer that passed accept (the upstream's, a local
    /// reply, a filter's, a refusal): what the connection manager adds after the filters, and
    /// the response counted. The driver adds what belongs to the wire (`date`, see
    /// [`super::driver`]).
    fn response_head(&self, response: Response<Body>) -> Response<Body> {
        response
    }

    /// **Route matched**: what the route response head needs to know of the route a request
    /// took (its response header rules, the request facts their values read), taken when the
    /// upstream phases begin, so that a local reply after routing carries the route's rules
    /// too (as Envoy's router adds them to its own replies). A route that answers itself
    /// puts this in its answer's extensions instead.
    fn route_matched(
        &self,
        request: &Request<Body>,
        target: &Self::Target<'_>,
        conn: &ConnectionInfo,
    ) -> Option<MatchedRoute> {
        let _ = (request, target, conn);
        None
    }

    /// **Log**: the entry takes the response head and what the upstream phases noted; its
    /// line is written when the response body ends (or is dropped).
    fn log(
        &self,
        log: Self::Log,
        response: Response<Body>,
        upstream: UpstreamSeen,
    ) -> Response<Body> {
        let _ = (log, upstream);
        response
    }
}

/// Runs one stream through every phase of `phases`, in order; returns its response head and
/// streamed body. Never fails: every problem is a local reply.
pub async fn run_stream<P, B>(
    phases: &P,
    request: Request<B>,
    conn: &ConnectionInfo,
) -> Response<Body>
where
    P: StreamPhases,
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<body::BoxError>,
{
    // Open log.
    let (log, mut request) = phases.open_log(request, conn);
    // Boxed where it is made, and only here: the stream's future holds every phase's state
    // (kilobytes), and each layer that holds it inline (the codec's task, the log's notes
    // scope) would copy it whole when moved; boxed, it is copied once, into the box, with or
    // without a log.
    let stream = Box::pin(async move {
        // Accept.
        if let ControlFlow::Break(refused) = phases.accept(conn) {
            return refused;
        }
        // Head received.
        if let ControlFlow::Break(refused) = phases.head_received(&mut request, conn) {
            return phases.response_head(refused);
        }
        // Request filters.
        let (mut request, filters) = match phases.request_filters(request, conn).await {
            Filtered::Continue(request, filters) => (request, filters),
            Filtered::Answered(mut response, filters) => {
                let matched = response.extensions_mut().remove::<MatchedRoute>();
                let response = phases.route_response_head(matched, conn, response);
                let response = phases.response_filters(filters, response).await;
                return phases.response_head(response);
            }
        };
        // Request id, route, upstream selected, upstream request, forward: a failure of any
        // is answered with a local reply.
        let request_id = phases.request_id(&mut request);
        let mut matched = None;
        let forwarded = async {
            let target = match phases.route(&request, conn)? {
                Routed::Answered(response) => return Ok(response),
                Routed::Upstream(target) => target,
            };
            matched = phases.route_matched(&request, &target, conn);
            let target = phases.upstream_selected(&request, target)?;
            let upstream = phases.upstream_request(request, target, conn)?;
            phases.forward(upstream, conn).await
        };
        let mut response = match forwarded.await {
            Ok(response) => response,
            Err(reply) => {
                // The detail (cluster, host, OS error) is for the operator, never the client.
                tracing::debug!(status = %reply.status(), ?reply, request_id = ?request_id, "local reply");
                phases.local_reply(reply)
            }
        };
        // Route response head: a route that answered itself said which it was in its answer.
        let matched = matched.or_else(|| response.extensions_mut().remove::<MatchedRoute>());
        let response = phases.route_response_head(matched, conn, response);
        // Response filters.
        let response = phases.response_filters(filters, response).await;
        // Response head.
        phases.response_head(response)
    });
    // Log: the upstream phases note what they learn for the entry, where there is one.
    let Some(log) = log else {
        return stream.await;
    };
    let (response, upstream) = with_notes(stream).await;
    phases.log(log, response, upstream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Phases that record their calls; `answer_at` names the phase that answers locally.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<&'static str>>,
        answer_at: Option<&'static str>,
    }

    impl Recorder {
        fn call(&self, phase: &'static str) -> bool {
            self.calls.lock().unwrap().push(phase);
            self.answer_at == Some(phase)
        }

        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn status(status: u16) -> Response<Body> {
        let mut response = Response::new(body::empty());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response
    }

    impl StreamPhases for Recorder {
        type Log = ();
        type ResponseFilters = ();
        type Target<'s> = ();
        type Upstream<'s> = ();

        fn open_log<B>(
            &self,
            request: Request<B>,
            _conn: &ConnectionInfo,
        ) -> (Option<()>, Request<Body>)
        where
            B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
            B::Error: Into<body::BoxError>,
        {
            self.call("open log");
            (Some(()), request.map(body::boxed))
        }

        fn accept(&self, _conn: &ConnectionInfo) -> ControlFlow<Response<Body>> {
            if self.call("accept") {
                return ControlFlow::Break(status(503));
            }
            ControlFlow::Continue(())
        }

        fn head_received(
            &self,
            _request: &mut Request<Body>,
            _conn: &ConnectionInfo,
        ) -> ControlFlow<Response<Body>> {
            if self.call("head received") {
                return ControlFlow::Break(status(400));
            }
            ControlFlow::Continue(())
        }

        async fn request_filters(
            &self,
            request: Request<Body>,
            _conn: &ConnectionInfo,
        ) -> Filtered<()> {
            if self.call("request filters") {
                return Filtered::Answered(status(403), ());
            }
            Filtered::Continue(request, ())
        }

        fn request_id(&self, _request: &mut Request<Body>) -> Option<HeaderValue> {
            self.call("request id");
            None
        }

        fn route(
            &self,
            _request: &Request<Body>,
            _conn: &ConnectionInfo,
        ) -> Result<Routed<()>, LocalReply> {
            if self.call("route") {
                return Err(LocalReply::NoRoute);
            }
            Ok(Routed::Upstream(()))
        }

        fn upstream_selected(&self, _request: &Request<Body>, (): ()) -> Result<(), LocalReply> {
            self.call("upstream selected");
            Ok(())
        }

        fn upstream_request(
            &self,
            _request: Request<Body>,
            (): (),
            _conn: &ConnectionInfo,
        ) -> Result<(), LocalReply> {
            self.call("upstream request");
            Ok(())
        }

        async fn forward(
            &self,
            (): (),
            _conn: &ConnectionInfo,
        ) -> Result<Response<Body>, LocalReply> {
            self.call("forward");
            Ok(status(200))
        }

        fn local_reply(&self, reply: LocalReply) -> Response<Body> {
            self.call("local reply");
            reply.into_response()
        }

        async fn response_filters(&self, (): (), response: Response<Body>) -> Response<Body> {
            self.call("response filters");
            response
        }

        fn route_response_head(
            &self,
            _route: Option<MatchedRoute>,
            _conn: &ConnectionInfo,
            response: Response<Body>,
        ) -> Response<Body> {
            self.call("route response head");
            response
        }

        fn response_head(&self, response: Response<Body>) -> Response<Body> {
            self.call("response head");
            response
        }

        fn log(&self, (): (), response: Response<Body>, _upstream: UpstreamSeen) -> Response<Body> {
            self.call("log");
            response
        }
    }

    /// The phases up to the request filters, and those on the way back: the route's response
    /// headers before the response filters (Envoy's order: a filter sees them).
    const IN: [&str; 4] = ["open log", "accept", "head received", "request filters"];
    const BACK: [&str; 4] = [
        "route response head",
        "response filters",
        "response head",
        "log",
    ];

    async fn run(answer_at: Option<&'static str>) -> (u16, Vec<&'static str>) {
        let phases = Recorder {
            answer_at,
            ..Recorder::default()
        };
        let request = Request::new(body::empty());
        let response = run_stream(&phases, request, &ConnectionInfo::loopback()).await;
        (response.status().as_u16(), phases.calls())
    }

    #[tokio::test]
    async fn a_forwarded_stream_passes_every_phase_in_order() {
        let (status, calls) = run(None).await;
        assert_eq!(status, 200);
        let upstream = [
            "request id",
            "route",
            "upstream selected",
            "upstream request",
            "forward",
        ];
        assert_eq!(calls, [&IN[..], &upstream, &BACK].concat());
    }

    #[tokio::test]
    async fn a_local_reply_skips_the_upstream_but_not_the_way_back() {
        let (status, calls) = run(Some("route")).await;
        assert_eq!(status, 404);
        let routed = ["request id", "route", "local reply"];
        assert_eq!(calls, [&IN[..], &routed, &BACK].concat());
    }

    #[tokio::test]
    async fn a_filters_answer_goes_back_through_the_filters_and_is_logged() {
        let (status, calls) = run(Some("request filters")).await;
        assert_eq!(status, 403);
        assert_eq!(calls, [&IN[..], &BACK].concat());
    }

    #[tokio::test]
    async fn a_refused_head_gets_its_response_head_and_a_refused_stream_only_its_log() {
        let (status, calls) = run(Some("head received")).await;
        assert_eq!(status, 400);
        assert_eq!(
            calls,
            [
                "open log",
                "accept",
                "head received",
                "response head",
                "log"
            ]
        );
        let (status, calls) = run(Some("accept")).await;
        assert_eq!(status, 503);
        assert_eq!(calls, ["open log", "accept", "log"]);
    }
}
