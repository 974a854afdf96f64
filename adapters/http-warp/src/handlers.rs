//! Route handlers: each turns a request into a complete response, errors included.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use profile_core::ProfileRead;
use profile_core::domain::ProfileUpdate;
use profile_core::ports::Timings;
use warp::Buf;
use warp::Rejection;
use warp::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY};
use warp::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use warp::hyper::body::Body as _;
use warp::reject::{
    InvalidHeader, InvalidQuery, LengthRequired, MethodNotAllowed, MissingHeader, PayloadTooLarge,
    UnsupportedMediaType,
};
use warp::reply::Response;

use crate::Ctx;
use crate::problem::{self, Kind};
use crate::{auth, conditional};

/// Largest accepted PATCH body, in bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// A constant name: a `&str` name is parsed and checked on every insert.
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// `GET /user/profile`.
pub(crate) async fn get_profile(ctx: Arc<Ctx>, start: Instant, headers: HeaderMap) -> Response {
    let user = match auth::authenticate(&*ctx.state.verifier, headers.get(AUTHORIZATION)) {
        Ok(u) => u,
        Err(e) => return problem::unauthorized(e),
    };
    match ctx.state.service.get(user).await {
        Ok(read) => {
            let etag = conditional::etag_value(&read.view.etag());
            if etag.as_ref().is_some_and(|e| conditional::not_modified(&headers, e)) {
                return not_modified(etag, &read.timings, start);
            }
            profile_response(&read, etag, start)
        }
        Err(e) => problem::service_error(e),
    }
}

/// `PATCH /user/profile`.
pub(crate) async fn patch_profile<S, B>(
    ctx: Arc<Ctx>,
    start: Instant,
    headers: HeaderMap,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let user = match auth::authenticate(&*ctx.state.verifier, headers.get(AUTHORIZATION)) {
        Ok(u) => u,
        Err(e) => return problem::unauthorized(e),
    };
    if !is_json_media_type(headers.get(CONTENT_TYPE)) {
        return problem::problem(
            Kind::UnsupportedMediaType,
            "The body must be application/merge-patch+json or application/json.",
        );
    }
    let bytes = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let doc: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        // serde's message names only a line and column, never the input itself.
        Err(e) => return problem::problem(Kind::BadRequest, format!("The body is not valid JSON: {e}.")),
    };
    let precondition = conditional::precondition(&headers);
    let parsed = ProfileUpdate::from_merge_patch(&doc, ctx.state.service.today());
    match ctx.state.service.update(user, parsed, precondition).await {
        Ok(read) => profile_response(&read, conditional::etag_value(&read.view.etag()), start),
        Err(e) => problem::service_error(e),
    }
}

/// `GET /healthz`.
pub(crate) fn healthz() -> Response {
    json_static(r#"{"status":"ok"}"#)
}

/// `GET /readyz`.
pub(crate) async fn readyz(ctx: Arc<Ctx>) -> Response {
    match ctx.state.service.ready().await {
        Ok(()) => json_static(r#"{"status":"ready"}"#),
        Err(e) => problem::not_ready(format!("readiness check failed: {e:?}")),
    }
}

/// `GET /metrics`.
pub(crate) fn metrics(ctx: Arc<Ctx>) -> Response {
    let mut res = Response::new((ctx.state.metrics)().into());
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// This API's OpenAPI 3.1 description, embedded at compile time from the repository root.
const OPENAPI_YAML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.yaml"));

/// `GET /openapi.yaml`.
pub(crate) fn openapi() -> Response {
    let mut res = Response::new(OPENAPI_YAML.into());
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The answer to `HEAD`: the `GET` answer's status and headers, its body dropped. The
/// `Content-Length` a `GET` would carry is kept (none for `304`, which has no content).
pub(crate) fn without_body(res: Response) -> Response {
    let (mut parts, body) = res.into_parts();
    let has_content = !matches!(parts.status, StatusCode::NOT_MODIFIED | StatusCode::NO_CONTENT);
    if let Some(n) = body.size_hint().exact().filter(|_| has_content) {
        parts.headers.entry(CONTENT_LENGTH).or_insert_with(|| HeaderValue::from(n));
    }
    Response::from_parts(parts, Default::default())
}

/// The one `recover`: whatever warp rejected becomes a problem document.
pub(crate) async fn recover(r: Rejection) -> Result<Response, Infallible> {
    let res = if r.is_not_found() {
        problem::problem(Kind::NotFound, "No resource exists at this path.")
    } else if r.find::<MethodNotAllowed>().is_some() {
        problem::problem(Kind::MethodNotAllowed, "This method is not supported on this resource.")
    } else if r.find::<PayloadTooLarge>().is_some() {
        too_large()
    } else if r.find::<UnsupportedMediaType>().is_some() {
        problem::problem(Kind::UnsupportedMediaType, "The request's media type is not supported.")
    } else if r.find::<LengthRequired>().is_some() {
        problem::problem(Kind::LengthRequired, "A Content-Length header is required.")
    } else if r.find::<InvalidHeader>().is_some()
        || r.find::<MissingHeader>().is_some()
        || r.find::<InvalidQuery>().is_some()
    {
        problem::problem(Kind::BadRequest, "The request is malformed.")
    } else {
        problem::internal_noted(format!("unhandled rejection: {r:?}"))
    };
    Ok(res)
}

fn json_static(body: &'static str) -> Response {
    let mut res = Response::new(body.into());
    // Room for these and the headers `observe::finish` adds: one allocation.
    *res.headers_mut() = HeaderMap::with_capacity(6);
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn too_large() -> Response {
    problem::problem(Kind::PayloadTooLarge, "The body exceeds the 16 KiB limit.")
}

/// Reads the body, refusing more than [`MAX_BODY`] bytes whether or not a
/// Content-Length announced it (chunked bodies are counted as they arrive).
async fn read_body<S, B>(headers: &HeaderMap, body: S) -> Result<Vec<u8>, Response>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let announced = match headers.get(CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                return Err(problem::problem(Kind::BadRequest, "The Content-Length header is malformed."));
            }
        },
    };
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let hint = announced.map_or(1024, |n| n as usize);
    let mut buf = Vec::with_capacity(hint);
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(_) => return Err(problem::problem(Kind::BadRequest, "The request body could not be read.")),
        };
        if buf.len() + chunk.remaining() > MAX_BODY {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf)
}

/// `application/merge-patch+json` or `application/json`, parameters allowed.
fn is_json_media_type(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/merge-patch+json")
        || essence.eq_ignore_ascii_case("application/json")
}

/// Headers shared by `200` and `304` of the profile.
fn cache_headers(h: &mut HeaderMap, etag: Option<HeaderValue>, timings: &Timings, start: Instant) {
    if let Some(etag) = etag {
        h.insert(ETAG, etag);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    h.insert(VARY, HeaderValue::from_static("Authorization"));
    let mut buf = TimingBuf::default();
    server_timing(&mut buf, timings, start.elapsed());
    // One exact-size copy: a `String` of spare capacity turned into a value costs a
    // second allocation (the shared buffer it is promoted to).
    if let Ok(v) = HeaderValue::from_bytes(buf.as_bytes()) {
        h.insert(SERVER_TIMING, v);
    }
}

fn profile_response(read: &ProfileRead, etag: Option<HeaderValue>, start: Instant) -> Response {
    let mut res = Response::new(read.view.to_json().into());
    // Room for every header this answer and `observe::finish` add: no regrowth.
    *res.headers_mut() = HeaderMap::with_capacity(12);
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    cache_headers(h, etag, &read.timings, start);
    res
}

fn not_modified(etag: Option<HeaderValue>, timings: &Timings, start: Instant) -> Response {
    let mut res = Response::default();
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    cache_headers(res.headers_mut(), etag, timings, start);
    res
}

/// Room for the longest `Server-Timing` value: four entries of at most 16 + 23 + 4 bytes
/// (name and `;dur=`, the whole milliseconds of the longest `Duration`, the fraction)
/// and the separators between them.
const TIMING_CAP: usize = 4 * (16 + 23 + 4) + 3 * 2;

/// A `Server-Timing` value built on the stack.
struct TimingBuf {
    bytes: [u8; TIMING_CAP],
    len: usize,
}

impl Default for TimingBuf {
    fn default() -> Self {
        Self { bytes: [0; TIMING_CAP], len: 0 }
    }
}

impl TimingBuf {
    fn push(&mut self, s: &[u8]) {
        // Never fails for the names below (see TIMING_CAP); were it to, the value is cut
        // rather than the request failed.
        let n = s.len().min(TIMING_CAP - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `total;dur=…` plus one entry per step that ran, in milliseconds.
fn server_timing(out: &mut TimingBuf, t: &Timings, total: Duration) {
    let mut put = |name: &str, d: Duration| {
        if out.len > 0 {
            out.push(b", ");
        }
        // Integers, without the formatting machinery: this header is on every answer.
        let us = d.as_micros();
        let frac = (us % 1000) as u16;
        out.push(name.as_bytes());
        out.push(b";dur=");
        out.push(itoa::Buffer::new().format(us / 1000).as_bytes());
        out.push(&[b'.', b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8]);
    };
    put("total", total);
    if let Some(d) = t.db_profiles {
        put("db_profiles", d);
    }
    if let Some(d) = t.db_main {
        put("db_main", d);
    }
    if let Some(d) = t.rewards {
        put("rewards", d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let ok = |v: &'static str| is_json_media_type(Some(&HeaderValue::from_static(v)));
        assert!(ok("application/json"));
        assert!(ok("application/merge-patch+json; charset=utf-8"));
        assert!(ok("Application/JSON ;charset=UTF-8"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/jsonx"));
        assert!(!is_json_media_type(None));
    }

    fn timing(t: &Timings, total: Duration) -> String {
        let mut buf = TimingBuf::default();
        server_timing(&mut buf, t, total);
        String::from_utf8(buf.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn server_timing_lists_steps_that_ran() {
        let t = Timings { db_profiles: None, db_main: Some(Duration::from_micros(1500)), rewards: None };
        assert_eq!(timing(&t, Duration::from_millis(2)), "total;dur=2.000, db_main;dur=1.500");
        let t = Timings {
            db_profiles: Some(Duration::from_micros(7)),
            db_main: None,
            rewards: Some(Duration::from_micros(12_034_060)),
        };
        assert_eq!(
            timing(&t, Duration::from_micros(12_345_678)),
            "total;dur=12345.678, db_profiles;dur=0.007, rewards;dur=12034.060"
        );
    }

    #[test]
    fn the_longest_server_timing_fits_whole() {
        let t = Timings {
            db_profiles: Some(Duration::MAX),
            db_main: Some(Duration::MAX),
            rewards: Some(Duration::MAX),
        };
        let ms = (Duration::MAX.as_micros() / 1000).to_string();
        let frac = Duration::MAX.as_micros() % 1000;
        let entry = |name: &str| format!("{name};dur={ms}.{frac:03}");
        let whole = ["total", "db_profiles", "db_main", "rewards"].map(entry).join(", ");
        assert_eq!(timing(&t, Duration::MAX), whole);
        assert!(HeaderValue::from_bytes(whole.as_bytes()).is_ok());
    }
}
