//! The error answer of the contract: a status and a JSON body
//! `{"error": code, "message": …, "leader": id|null}`, and how node errors
//! map to it. Every code here is listed in `docs/KV_API.md`.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_node::NodeError;
use serde_json::json;

use super::ApiState;

/// An error answer.
///
/// ```
/// use axum::response::IntoResponse;
/// use keel_kv::api::ApiError;
/// let answer = ApiError::bad_request("the key is empty").into_response();
/// assert_eq!(answer.status(), 400);
/// ```
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    leader: Option<u64>,
    /// Whether the connection must close after the answer (its request's
    /// body was not read to the end).
    close: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            leader: None,
            close: false,
        }
    }

    /// `400 bad_request`: a malformed key, body or parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message)
    }

    pub(crate) fn body_timeout(after: Duration) -> Self {
        let message = format!("the request body did not arrive within {} ms", after.as_millis());
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message).closing()
    }

    pub(crate) fn overloaded(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    pub(crate) fn shutting_down(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
    }

    pub(crate) fn not_ready(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The connection closes after this answer.
    pub(crate) fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub(crate) fn with_leader(mut self, leader: Option<u64>) -> Self {
        self.leader = leader;
        self
    }

    /// Its error code.
    ///
    /// ```
    /// use keel_kv::api::ApiError;
    /// assert_eq!(ApiError::bad_request("no").code(), "bad_request");
    /// ```
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Maps a node error to an answer, per `docs/KV_API.md`.
    ///
    /// ```
    /// use keel_kv::api::ApiError;
    /// use keel_node::NodeError;
    /// assert_eq!(ApiError::from_node(NodeError::NotMember).code(), "not_member");
    /// ```
    pub fn from_node(error: NodeError) -> Self {
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        let message = error.to_string();
        match error {
            NodeError::NoLeader | NodeError::NotLeader { leader: None } => {
                ApiError::new(unavailable, "no_leader", message)
            }
            NodeError::NotLeader { leader: Some(leader) } => {
                ApiError::new(unavailable, "not_leader", message).with_leader(Some(leader.get()))
            }
            NodeError::Timeout => ApiError::new(unavailable, "timeout", message),
            NodeError::ShuttingDown => ApiError::shutting_down(message),
            NodeError::Conflict(reason) => ApiError::new(StatusCode::CONFLICT, "conflict", reason),
            NodeError::Overloaded(_) => ApiError::overloaded(message),
            NodeError::NotMember => ApiError::new(unavailable, "not_member", message),
            NodeError::NotVoter(_) => ApiError::not_found(message),
            NodeError::Refused(reason) => ApiError::bad_request(reason),
            NodeError::Fatal(reason) => ApiError::internal(format!("the node stopped: {reason}")),
        }
    }

    /// Whether the leader hint is worth filling in: the answer says "not
    /// here, not now", and no leader is not its very point.
    fn wants_leader_hint(&self) -> bool {
        self.leader.is_none() && self.status == StatusCode::SERVICE_UNAVAILABLE && self.code != "no_leader"
    }
}

/// The JSON body of an error answer; also written for requests the HTTP
/// layer refuses before any handler runs.
pub(crate) fn error_body(code: &str, message: &str, leader: Option<u64>) -> Vec<u8> {
    json!({"error": code, "message": message, "leader": leader})
        .to_string()
        .into_bytes()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = error_body(self.code, &self.message, self.leader);
        let json = HeaderValue::from_static("application/json");
        let mut response = (self.status, [(header::CONTENT_TYPE, json)], body).into_response();
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Answers a node error, with the leader this node knows as a hint where
/// one helps (never on `no_leader`). The hint is a courtesy, the error is
/// the answer: it is not waited for long.
pub(crate) async fn node_error(state: &ApiState, error: NodeError) -> ApiError {
    let error = ApiError::from_node(error);
    if !error.wants_leader_hint() {
        return error;
    }
    let status = tokio::time::timeout(Duration::from_millis(100), state.node.status()).await;
    let leader = status
        .ok()
        .and_then(Result::ok)
        .and_then(|status| status.raft.leader);
    error.with_leader(leader.map(|id| id.get()))
}

/// The result of a handler.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use keel::NodeId;

    use super::*;

    fn answer(error: NodeError) -> (u16, &'static str, Option<u64>) {
        let answer = ApiError::from_node(error);
        (answer.status.as_u16(), answer.code, answer.leader)
    }

    #[test]
    fn every_node_error_has_a_code_of_the_contract() {
        let leader = Some(NodeId::new(2));
        assert_eq!(answer(NodeError::NoLeader), (503, "no_leader", None));
        assert_eq!(
            answer(NodeError::NotLeader { leader: None }),
            (503, "no_leader", None)
        );
        assert_eq!(
            answer(NodeError::NotLeader { leader }),
            (503, "not_leader", Some(2))
        );
        assert_eq!(answer(NodeError::Timeout), (503, "timeout", None));
        assert_eq!(answer(NodeError::ShuttingDown), (503, "shutting_down", None));
        assert_eq!(answer(NodeError::Conflict("x".into())), (409, "conflict", None));
        assert_eq!(
            answer(NodeError::Overloaded("x".into())),
            (503, "overloaded", None)
        );
        assert_eq!(answer(NodeError::NotMember), (503, "not_member", None));
        assert_eq!(
            answer(NodeError::NotVoter(NodeId::new(4))),
            (404, "not_found", None)
        );
        assert_eq!(answer(NodeError::Refused("x".into())), (400, "bad_request", None));
        assert_eq!(answer(NodeError::Fatal("disk".into())), (500, "internal", None));
    }

    #[test]
    fn no_leader_never_asks_for_a_hint() {
        assert!(!ApiError::from_node(NodeError::NoLeader).wants_leader_hint());
        assert!(ApiError::from_node(NodeError::Timeout).wants_leader_hint());
        assert!(!ApiError::bad_request("x").wants_leader_hint());
    }
}
