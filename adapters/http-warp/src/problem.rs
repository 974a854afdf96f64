//! RFC 9457 problem documents: the one shape every error response takes.

use std::borrow::Cow;

use profile_core::ServiceError;
use profile_core::domain::FieldError;
use profile_core::ports::AuthError;
use serde::Serialize;
use warp::http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

/// Media type of every error body.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// A failure the client should hear about, kept off the wire: the request logger
/// picks it from the response extensions and logs it with the request id.
#[derive(Debug, Clone)]
pub(crate) struct ErrorNote {
    /// Server fault (error level) rather than a dependency hiccup (warn level).
    pub(crate) internal: bool,
    /// The text for the log; never sent.
    pub(crate) message: String,
}

/// The problem kinds this API answers with: status, type URI and title fixed together
/// so a client can switch on `type` and never see two titles for one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    BadRequest,
    Unauthorized,
    Forbidden,
    AccountNotFound,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    LengthRequired,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    Validation,
    Internal,
    Unavailable,
    NotReady,
}

impl Kind {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest => {
                (StatusCode::BAD_REQUEST, "urn:profile-api:problem:bad-request", "Bad request")
            }
            Self::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "urn:profile-api:problem:unauthorized", "Authentication required")
            }
            Self::Forbidden => {
                (StatusCode::FORBIDDEN, "urn:profile-api:problem:account-suspended", "Account suspended")
            }
            Self::AccountNotFound => {
                (StatusCode::NOT_FOUND, "urn:profile-api:problem:account-not-found", "Account not found")
            }
            Self::NotFound => (StatusCode::NOT_FOUND, "urn:profile-api:problem:not-found", "Not found"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "urn:profile-api:problem:method-not-allowed",
                "Method not allowed",
            ),
            Self::EmailTaken => {
                (StatusCode::CONFLICT, "urn:profile-api:problem:email-taken", "E-mail address taken")
            }
            Self::LengthRequired => {
                (StatusCode::LENGTH_REQUIRED, "urn:profile-api:problem:length-required", "Length required")
            }
            Self::PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                "urn:profile-api:problem:precondition-failed",
                "Precondition failed",
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:profile-api:problem:payload-too-large",
                "Payload too large",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "urn:profile-api:problem:unsupported-media-type",
                "Unsupported media type",
            ),
            Self::Validation => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "urn:profile-api:problem:validation-error",
                "Invalid profile patch",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "urn:profile-api:problem:internal-error",
                "Internal server error",
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:profile-api:problem:unavailable",
                "Service unavailable",
            ),
            Self::NotReady => {
                (StatusCode::SERVICE_UNAVAILABLE, "urn:profile-api:problem:not-ready", "Not ready")
            }
        }
    }
}

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

/// A problem response of `kind` with a client-safe `detail`.
pub(crate) fn problem(kind: Kind, detail: impl Into<Cow<'static, str>>) -> Response {
    build(kind, &detail.into(), None)
}

fn build(kind: Kind, detail: &str, errors: Option<&[FieldError]>) -> Response {
    let (status, type_uri, title) = kind.parts();
    let doc = Doc { kind: type_uri, title, status: status.as_u16(), detail, errors };
    // Plain data with string keys: serialisation cannot fail, the fallback is never used.
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    // Errors depend on the caller and the moment; no cache should replay them.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `401` with the bearer challenge; `error="invalid_token"` only when a token was sent
/// (RFC 6750 §3.1: a request without credentials gets no error code).
pub(crate) fn unauthorized(err: AuthError) -> Response {
    let (challenge, detail) = match err {
        AuthError::Missing => ("Bearer", "A bearer token is required in the Authorization header."),
        AuthError::Invalid => ("Bearer error=\"invalid_token\"", "The bearer token is malformed or invalid."),
        AuthError::Expired => ("Bearer error=\"invalid_token\"", "The bearer token has expired."),
    };
    let mut res = problem(Kind::Unauthorized, detail);
    res.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    res
}

/// `405` naming the methods the path does support.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response {
    let mut res = problem(Kind::MethodNotAllowed, format!("This resource supports only: {allow}."));
    res.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    res
}

/// `422` listing every refused field.
pub(crate) fn invalid(errors: &[FieldError]) -> Response {
    let detail = match errors.len() {
        1 => "1 field is invalid; see `errors`.".to_owned(),
        n => format!("{n} fields are invalid; see `errors`."),
    };
    build(Kind::Validation, &detail, Some(errors))
}

/// Attaches a note for the request logger.
fn noted(mut res: Response, internal: bool, message: String) -> Response {
    res.extensions_mut().insert(ErrorNote { internal, message });
    res
}

/// The response for a failed use case. Storage texts go to the log only.
pub(crate) fn service_error(err: ServiceError) -> Response {
    match err {
        ServiceError::AccountNotFound => {
            problem(Kind::AccountNotFound, "No active account exists for the authenticated user.")
        }
        ServiceError::AccountSuspended => problem(Kind::Forbidden, "The account is suspended."),
        ServiceError::Invalid(errors) => invalid(&errors),
        ServiceError::PreconditionFailed => problem(
            Kind::PreconditionFailed,
            "The profile changed since the ETag given in If-Match; read it again and retry.",
        ),
        ServiceError::EmailTaken => {
            problem(Kind::EmailTaken, "personal.email: the address is already used by another account.")
        }
        ServiceError::Unavailable(msg) => noted(unavailable(Kind::Unavailable), false, msg),
        ServiceError::Internal(msg) => noted(internal(), true, msg),
    }
}

/// `503` with a hint to retry soon.
pub(crate) fn unavailable(kind: Kind) -> Response {
    let mut res = problem(kind, "A backing store cannot serve right now; retry shortly.");
    res.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// `500` with nothing of the cause.
pub(crate) fn internal() -> Response {
    problem(Kind::Internal, "An unexpected error occurred.")
}

/// `500` whose cause is logged with the request id.
pub(crate) fn internal_noted(message: String) -> Response {
    noted(internal(), true, message)
}

/// `503` from the readiness probe, its cause logged.
pub(crate) fn not_ready(message: String) -> Response {
    noted(unavailable(Kind::NotReady), false, message)
}
