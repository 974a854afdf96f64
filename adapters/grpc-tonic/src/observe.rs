//! Per-call observability around every gRPC service: request id, one log line, metrics
//! by method and code; and the 16 KiB refusal as `RESOURCE_EXHAUSTED`.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{Counter, Histogram};
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// Calls served, by method and status code.
pub(crate) const CALLS_TOTAL: &str = "grpc_requests_total";
/// Call latency in seconds, by method and status code.
pub(crate) const CALL_DURATION: &str = "grpc_request_duration_seconds";

const X_REQUEST_ID: &str = "x-request-id";

/// The methods counted on their own; anything else is `other`, so a scanner trying
/// paths cannot blow up metric cardinality.
const METHODS: &[&str] = &[
    "/profile.v1.ProfileService/GetProfile",
    "/profile.v1.ProfileService/UpdateProfile",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "other",
];
const OTHER: usize = METHODS.len() - 1;

const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Registers descriptions of the metrics this adapter emits.
pub fn describe_metrics() {
    metrics::describe_counter!(CALLS_TOTAL, "gRPC calls served, by method and status code");
    metrics::describe_histogram!(
        CALL_DURATION,
        metrics::Unit::Seconds,
        "gRPC call latency, by method and status code"
    );
}

/// The request id of a call, for the handlers' own log lines.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) Arc<str>);

/// Sane ids are echoed; anything else could forge or bloat log lines, so it is replaced.
fn is_sane_request_id(b: &[u8]) -> bool {
    (1..=128).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

fn generate_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn request_id(headers: &HeaderMap) -> Arc<str> {
    match headers.get(X_REQUEST_ID) {
        Some(v) if is_sane_request_id(v.as_bytes()) => Arc::from(v.to_str().unwrap_or_default()),
        _ => Arc::from(generate_request_id()),
    }
}

fn method_index(path: &str) -> usize {
    METHODS[..OTHER].iter().position(|m| *m == path).unwrap_or(OTHER)
}

/// The call's status as its response headers carry it (an error answer is
/// trailers-only); no `grpc-status` there means the call succeeded.
fn response_code(headers: &HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// Metric handles, resolved on first use of each (method, code) pair.
struct Handles {
    cells: Vec<[OnceLock<(Counter, Histogram)>; 17]>,
}

impl Handles {
    fn new() -> Self {
        Self { cells: (0..METHODS.len()).map(|_| std::array::from_fn(|_| OnceLock::new())).collect() }
    }

    fn get(&self, method: usize, code: usize) -> &(Counter, Histogram) {
        self.cells[method][code].get_or_init(|| {
            let (m, c) = (METHODS[method], CODES[code]);
            (
                metrics::counter!(CALLS_TOTAL, "method" => m, "code" => c),
                metrics::histogram!(CALL_DURATION, "method" => m, "code" => c),
            )
        })
    }
}

/// Wraps every service of the gRPC server with [`Observed`].
#[derive(Clone)]
pub(crate) struct ObserveLayer {
    handles: Arc<Handles>,
    in_flight: Arc<AtomicUsize>,
}

impl ObserveLayer {
    /// A layer with its own metric handles.
    pub(crate) fn new() -> Self {
        Self { handles: Arc::new(Handles::new()), in_flight: Arc::default() }
    }

    /// How many calls are being answered right now (until their response headers;
    /// a unary call's work is done by then, a stream such as health `Watch` is not
    /// counted past its start).
    pub(crate) fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner, handles: self.handles.clone(), in_flight: self.in_flight.clone() }
    }
}

/// The observed service.
#[derive(Clone)]
pub(crate) struct Observed<S> {
    inner: S,
    handles: Arc<Handles>,
    in_flight: Arc<AtomicUsize>,
}

/// Counts a call in flight until it is answered or dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Observed<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let handles = self.handles.clone();
        let start = Instant::now();
        let method = method_index(req.uri().path());
        let id = request_id(req.headers());
        req.extensions_mut().insert(RequestId(id.clone()));
        let guard = InFlight::enter(&self.in_flight);
        Box::pin(async move {
            let _guard = guard;
            let mut res = inner.call(req).await?;
            let mut code = response_code(res.headers());
            // tonic refuses an oversized message with OUT_OF_RANGE; gRPC's convention
            // (and SPEC §11) is RESOURCE_EXHAUSTED. The profile service never answers
            // OUT_OF_RANGE itself, so on its methods this is only the size limit.
            if code == Code::OutOfRange && method < 2 {
                res = Status::resource_exhausted("The request message exceeds the 16 KiB limit.").into_http();
                code = Code::ResourceExhausted;
            }
            if let Ok(v) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(X_REQUEST_ID, v);
            }
            let elapsed = start.elapsed();
            let code_ix = usize::try_from(code as i32).unwrap_or(2).min(16);
            let (counter, histogram) = handles.get(method, code_ix);
            counter.increment(1);
            histogram.record(elapsed.as_secs_f64());
            tracing::info!(
                method = METHODS[method],
                code = CODES[code_ix],
                latency_ms = elapsed.as_micros() as f64 / 1000.0,
                request_id = &*id,
                "grpc call"
            );
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_table_matches_tonic() {
        for (i, name) in CODES.iter().enumerate() {
            let code = Code::from_i32(i as i32);
            assert_eq!(code as usize, i, "{name}");
        }
        assert_eq!(CODES[Code::Unauthenticated as usize], "UNAUTHENTICATED");
        assert_eq!(CODES[Code::ResourceExhausted as usize], "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            METHODS[method_index("/profile.v1.ProfileService/GetProfile")],
            "/profile.v1.ProfileService/GetProfile"
        );
        assert_eq!(METHODS[method_index("/profile.v1.ProfileService/Nope")], "other");
        assert_eq!(METHODS[method_index("/x")], "other");
    }

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h).len(), 32);
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-1"));
        assert_eq!(&*request_id(&h), "abc-1");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("a b"));
        assert_ne!(&*request_id(&h), "a b");
    }
}
