//! `profile.v1.ProfileService`: authenticate, call the use case, answer.

use profile_core::domain::{EntityTag, Precondition, ProfileUpdate};
use tonic::{Request, Response, Status};

use crate::observe::RequestId;
use crate::pb::profile_service_server::{ProfileService, ProfileServiceServer};
use crate::pb::{GetProfileRequest, Profile, UpdateProfileRequest};
use crate::{GrpcState, MAX_MESSAGE, auth, convert, mask, status};

/// The service implementation over the core.
pub(crate) struct Handler {
    state: GrpcState,
}

/// The generated server over [`Handler`], refusing request messages over 16 KiB.
pub(crate) fn server(state: GrpcState) -> ProfileServiceServer<Handler> {
    ProfileServiceServer::new(Handler { state }).max_decoding_message_size(MAX_MESSAGE)
}

/// `profile.etag` as the core's precondition: empty means none; quotes are optional;
/// anything else that is not a plain tag matches nothing.
fn precondition(etag: &str) -> Precondition {
    let t = etag.trim();
    if t.is_empty() {
        return Precondition::None;
    }
    let bare = t.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(t);
    if bare.is_empty() || bare.contains('"') {
        return Precondition::OneOf(Vec::new());
    }
    Precondition::OneOf(vec![EntityTag::new(bare)])
}

fn request_id<T>(req: &Request<T>) -> String {
    req.extensions().get::<RequestId>().map(|r| r.0.to_string()).unwrap_or_default()
}

/// The status for a failed use case; a cause kept from the client is logged here.
fn fail(err: profile_core::ServiceError, request_id: &str) -> Status {
    let (status, cause) = status::service_error(err);
    match cause {
        Some((true, message)) => tracing::error!(request_id, error = %message, "grpc call failed"),
        Some((false, message)) => tracing::warn!(request_id, error = %message, "dependency unavailable"),
        None => {}
    }
    status
}

#[tonic::async_trait]
impl ProfileService for Handler {
    async fn get_profile(&self, req: Request<GetProfileRequest>) -> Result<Response<Profile>, Status> {
        let user =
            auth::authenticate(&*self.state.verifier, req.metadata()).map_err(status::unauthenticated)?;
        let read = self.state.service.get(user).await.map_err(|e| fail(e, &request_id(&req)))?;
        Ok(Response::new(convert::profile(&read.view)))
    }

    async fn update_profile(&self, req: Request<UpdateProfileRequest>) -> Result<Response<Profile>, Status> {
        let user =
            auth::authenticate(&*self.state.verifier, req.metadata()).map_err(status::unauthenticated)?;
        let id = request_id(&req);
        let body = req.into_inner();
        let (doc, mask_problems) = mask::merge_patch(&body);
        let service = self.state.service.clone();
        let mut parsed = ProfileUpdate::from_merge_patch(&doc, service.today());
        // Refused mask paths first: they are about the request, the rest about values.
        let mut problems = mask_problems;
        problems.append(&mut parsed.problems);
        parsed.problems = problems;
        let precondition = precondition(body.profile.as_ref().map_or("", |p| p.etag.as_str()));
        // A write, once started, runs to its end even if the client goes away: tonic
        // drops the handler of a cancelled call, so the update runs in its own task.
        let task = tokio::spawn(async move { service.update(user, parsed, precondition).await });
        let read = match task.await {
            Ok(r) => r.map_err(|e| fail(e, &id))?,
            Err(e) => return Err(fail(profile_core::ServiceError::Internal(e.to_string()), &id)),
        };
        Ok(Response::new(convert::profile(&read.view)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_with_or_without_quotes() {
        assert_eq!(precondition(""), Precondition::None);
        assert_eq!(precondition("  "), Precondition::None);
        assert_eq!(precondition("abc"), Precondition::OneOf(vec![EntityTag::new("abc")]));
        assert_eq!(precondition("\"abc\""), Precondition::OneOf(vec![EntityTag::new("abc")]));
        assert_eq!(precondition("\"\""), Precondition::OneOf(vec![]));
        assert_eq!(precondition("a\"b"), Precondition::OneOf(vec![]));
    }
}
