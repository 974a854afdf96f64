//! Errors as gRPC statuses (SPEC §11): the codes, client-safe messages, and the
//! `google.rpc.BadRequest` detail carrying the same violations as HTTP's `errors`.

use profile_core::ServiceError;
use profile_core::domain::FieldError;
use profile_core::ports::AuthError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `UNAUTHENTICATED`, worded as the HTTP `401` details are.
pub(crate) fn unauthenticated(err: AuthError) -> Status {
    Status::unauthenticated(match err {
        AuthError::Missing => "A bearer token is required in the authorization metadata.",
        AuthError::Invalid => "The bearer token is malformed or invalid.",
        AuthError::Expired => "The bearer token has expired.",
    })
}

/// `INVALID_ARGUMENT` listing every refused field: `field` the dotted path, `reason`
/// the stable code, `description` the message.
pub(crate) fn invalid(errors: &[FieldError]) -> Status {
    let mut details = ErrorDetails::new();
    let violations = errors
        .iter()
        .map(|e| tonic_types::FieldViolation {
            field: e.field.clone(),
            description: e.message.clone(),
            reason: e.code.to_owned(),
            localized_message: None,
        })
        .collect::<Vec<_>>();
    details.set_bad_request(violations);
    let message = match errors.len() {
        1 => "1 field is invalid; see the BadRequest detail.".to_owned(),
        n => format!("{n} fields are invalid; see the BadRequest detail."),
    };
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// The status for a failed use case and, for the log only, what caused it when the
/// client must not hear it (storage texts).
pub(crate) fn service_error(err: ServiceError) -> (Status, Option<(bool, String)>) {
    match err {
        ServiceError::AccountNotFound => {
            (Status::not_found("No active account exists for the authenticated user."), None)
        }
        ServiceError::AccountSuspended => (Status::permission_denied("The account is suspended."), None),
        ServiceError::Invalid(errors) => (invalid(&errors), None),
        ServiceError::PreconditionFailed => {
            (Status::aborted("The profile changed since the etag given; read it again and retry."), None)
        }
        ServiceError::EmailTaken => {
            (Status::already_exists("personal.email: the address is already used by another account."), None)
        }
        ServiceError::Unavailable(cause) => (
            Status::unavailable("A backing store cannot serve right now; retry shortly."),
            Some((false, cause)),
        ),
        ServiceError::Internal(cause) => {
            (Status::internal("An unexpected error occurred."), Some((true, cause)))
        }
    }
}
