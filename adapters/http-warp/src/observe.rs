//! Per-request observability: request id, security headers, one log line, metrics.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram, SharedString};
use warp::http::header::X_CONTENT_TYPE_OPTIONS;
use warp::http::{HeaderName, HeaderValue, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;

use crate::problem::ErrorNote;

/// Header carrying the request id both ways.
pub(crate) const X_REQUEST_ID: &str = "x-request-id";
const X_REQUEST_ID_NAME: HeaderName = HeaderName::from_static(X_REQUEST_ID);

/// Requests served, by route template, method and status.
pub(crate) const REQUESTS_TOTAL: &str = "http_requests_total";
/// Request latency in seconds, by route template, method and status.
pub(crate) const REQUEST_DURATION: &str = "http_request_duration_seconds";

/// A client-sent request id that is safe to echo and log: 1–128 visible ASCII characters.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(HeaderValue);

impl FromStr for RequestId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        if is_sane_request_id(s.as_bytes()) {
            HeaderValue::from_str(s).map(Self).map_err(|_| ())
        } else {
            Err(())
        }
    }
}

/// Sane ids are echoed; anything else (empty, too long, spaces, controls, non-ASCII)
/// could forge log lines or bloat them, so it is replaced.
fn is_sane_request_id(b: &[u8]) -> bool {
    (1..=128).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// A fresh random 128-bit id, as 32 lower-case hex digits.
fn generate_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n: u128 = rand::random();
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = 124 - 4 * i;
        *byte = HEX[((n >> shift) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The route template for labels and logs; unknown paths collapse into `other` so a
/// scanner cannot blow up metric cardinality.
pub(crate) fn route_label(path: &str) -> &'static str {
    let p = match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => path,
    };
    match p {
        "/user/profile" => "/user/profile",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.yaml" => "/openapi.yaml",
        _ => "other",
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The statuses this API answers, each a static label (allocation-free on the hot path).
const STATUSES: [(u16, &str); 15] = [
    (200, "200"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (409, "409"),
    (411, "411"),
    (412, "412"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
    (500, "500"),
    (503, "503"),
];

const ROUTES: [&str; 6] = ["/user/profile", "/healthz", "/readyz", "/metrics", "/openapi.yaml", "other"];
const METHODS: [&str; 8] = ["GET", "PATCH", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "other"];

fn status_label(s: StatusCode) -> SharedString {
    match STATUSES.iter().find(|(code, _)| *code == s.as_u16()) {
        Some((_, label)) => SharedString::const_str(label),
        None => SharedString::from(s.as_u16().to_string()),
    }
}

/// The request counter and latency histogram of each (route, method, status), looked up
/// in the recorder once and kept: building and hashing a labelled key per request costs
/// more than recording the value.
pub(crate) struct RequestMetrics {
    handles: Box<[OnceLock<(Counter, Histogram)>]>,
}

impl RequestMetrics {
    /// An empty table; handles are taken from the recorder installed at first use.
    pub(crate) fn new() -> Self {
        let n = ROUTES.len() * METHODS.len() * STATUSES.len();
        Self { handles: (0..n).map(|_| OnceLock::new()).collect() }
    }

    fn record(&self, route: &'static str, method: &'static str, status: StatusCode, elapsed: Duration) {
        let slot = (|| {
            let r = ROUTES.iter().position(|x| *x == route)?;
            let m = METHODS.iter().position(|x| *x == method)?;
            let s = STATUSES.iter().position(|(code, _)| *code == status.as_u16())?;
            Some((r * METHODS.len() + m) * STATUSES.len() + s)
        })();
        let make = || {
            let status = status_label(status);
            (
                metrics::counter!(REQUESTS_TOTAL, "route" => route, "method" => method, "status" => status.clone()),
                metrics::histogram!(REQUEST_DURATION, "route" => route, "method" => method, "status" => status),
            )
        };
        // A status outside the table is looked up each time (and is rare).
        let looked_up;
        let (counter, histogram) = match slot.and_then(|i| self.handles.get(i)) {
            Some(cell) => cell.get_or_init(make),
            None => {
                looked_up = make();
                &looked_up
            }
        };
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    }
}

/// Registers descriptions of the metrics this adapter emits.
pub fn describe_metrics() {
    metrics::describe_counter!(REQUESTS_TOTAL, "HTTP requests served, by route template, method and status");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency, by route template, method and status"
    );
}

/// Runs last on every response: adds the request id and `nosniff`, logs one line and
/// records metrics.
pub(crate) fn finish(
    metrics: &RequestMetrics,
    start: Instant,
    method: warp::http::Method,
    path: FullPath,
    client_id: Option<RequestId>,
    mut res: Response,
) -> Response {
    let id = match client_id {
        Some(RequestId(v)) => v,
        None => generate_request_id(),
    };
    let note = res.extensions_mut().remove::<ErrorNote>();
    let status = res.status();
    let route = route_label(path.as_str());
    let method = method_label(&method);
    let elapsed = start.elapsed();
    let request_id = id.to_str().unwrap_or("");
    if let Some(ErrorNote { internal, message }) = note {
        if internal {
            tracing::error!(request_id, route, error = %message, "request failed");
        } else {
            tracing::warn!(request_id, route, error = %message, "dependency unavailable");
        }
    }
    // Whole microseconds: a short number to write, and all the precision a log needs.
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    tracing::info!(method, route, status = status.as_u16(), latency_ms, request_id, "request");

    metrics.record(route, method, status, elapsed);
    // Names as constants: a `&str` name is parsed and checked on every insert.
    let headers = res.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_REQUEST_ID_NAME, id);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        assert!(is_sane_request_id(b"abc-123_X:y"));
        assert!(is_sane_request_id(&[b'a'; 128]));
        assert!(!is_sane_request_id(&[b'a'; 129]));
        assert!(!is_sane_request_id(b""));
        assert!(!is_sane_request_id(b"a b"));
        assert!(!is_sane_request_id(b"a\tb"));
        assert!(!is_sane_request_id("é".as_bytes()));
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let a = generate_request_id();
        let b = generate_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }

    #[test]
    fn kept_handles_count_every_request_under_its_labels() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let table = RequestMetrics::new();
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                table.record("/user/profile", "GET", StatusCode::OK, Duration::from_millis(1));
            }
            table.record("/user/profile", "PATCH", StatusCode::PRECONDITION_FAILED, Duration::from_millis(2));
            // A status outside the table still counts, under its own label.
            table.record("other", "GET", StatusCode::IM_A_TEAPOT, Duration::from_millis(1));
        });
        let text = handle.render();
        for want in [
            r#"http_requests_total{route="/user/profile",method="GET",status="200"} 3"#,
            r#"http_requests_total{route="/user/profile",method="PATCH",status="412"} 1"#,
            r#"http_requests_total{route="other",method="GET",status="418"} 1"#,
            r#"http_request_duration_seconds_count{route="/user/profile",method="GET",status="200"} 3"#,
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    #[test]
    fn every_label_the_adapter_makes_has_a_slot() {
        for r in ["/user/profile", "/healthz", "/readyz", "/metrics", "/openapi.yaml", "/x"] {
            assert!(ROUTES.contains(&route_label(r)));
        }
        for m in [Method::GET, Method::PATCH, Method::HEAD, Method::POST, Method::TRACE] {
            assert!(METHODS.contains(&method_label(&m)));
        }
    }

    #[test]
    fn route_labels_are_bounded() {
        assert_eq!(route_label("/user/profile"), "/user/profile");
        assert_eq!(route_label("/healthz/"), "/healthz");
        assert_eq!(route_label("/openapi.yaml"), "/openapi.yaml");
        assert_eq!(route_label("/"), "other");
        assert_eq!(route_label("/user/42"), "other");
    }
}
