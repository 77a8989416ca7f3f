//! Probes and metrics: `GET /healthz` (liveness), `GET /readyz`
//! (readiness) and `GET /metrics`. None of them waits behind the
//! in-flight limit: a node busy with clients is still alive.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_node::{NodeError, NodeStatus};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::ApiState;

/// How long a probe waits for the node's status. Probes are usually given
/// a second; the raft loop answers in microseconds unless it is swamped.
const PROBE_STATUS_WAIT: Duration = Duration::from_millis(500);

async fn probe_status(state: &ApiState) -> Result<NodeStatus, NodeError> {
    match tokio::time::timeout(PROBE_STATUS_WAIT, state.node.status()).await {
        Ok(result) => result,
        Err(_) => Err(NodeError::Timeout),
    }
}

/// Liveness: `200` while the process serves and its node runs. `503
/// internal` once the node stopped after a fatal error (a failed disk
/// write, a panic in the state machine): only a restart helps. `503
/// shutting_down` while it stops. A raft loop too busy to answer in time
/// counts as alive: restarting a loaded node makes things worse.
pub(super) async fn healthz(State(state): State<ApiState>) -> ApiResult<Response> {
    match probe_status(&state).await {
        Ok(status) => match status.fatal {
            Some(reason) => Err(ApiError::internal(format!("the node stopped: {reason}"))),
            None => Ok("ok\n".into_response()),
        },
        Err(NodeError::ShuttingDown) => Err(ApiError::shutting_down("the node is shutting down")),
        Err(_) => Ok("ok (busy)\n".into_response()),
    }
}

/// Why a node is not ready to serve, from its status; empty if it is.
///
/// Ready means: the node runs (no fatal error: a disk that fails a write
/// stops the node, so this is also "the disk took every write so far"), it
/// is a member, it knows a leader, and it has applied within
/// `apply_lag_entries_max` of the commit index (a node catching up after a
/// restart or a snapshot serves stale reads and slow writes).
pub(super) fn unready_reasons(status: &NodeStatus, apply_lag_entries_max: u64) -> Vec<String> {
    let raft = &status.raft;
    let mut reasons = Vec::new();
    if let Some(reason) = &status.fatal {
        reasons.push(format!("the node stopped after a fatal error: {reason}"));
    }
    let conf = &raft.conf_state;
    let member = [
        conf.voters(),
        conf.learners(),
        conf.voters_outgoing(),
        conf.learners_next(),
    ]
    .iter()
    .any(|set| set.contains(&raft.id));
    if let Some(removal) = &status.removed {
        reasons.push(format!("this node was removed from the cluster: {removal}"));
    } else if !member {
        reasons.push("this node is not a member of the cluster".to_string());
    }
    if raft.leader.is_none() {
        reasons.push("no leader is known".to_string());
    }
    let commit = raft.hard_state.commit.get();
    let applied = raft.applied.get();
    let lag = commit.saturating_sub(applied);
    if lag > apply_lag_entries_max {
        reasons.push(format!(
            "applied {applied} is {lag} entries behind commit {commit} (at most {apply_lag_entries_max} allowed)"
        ));
    }
    reasons
}

/// Readiness: `200` with the node's leader and indexes when it can serve
/// (see [`unready_reasons`]), else `503 not_ready` saying why.
pub(super) async fn readyz(State(state): State<ApiState>) -> ApiResult<Response> {
    let status = match probe_status(&state).await {
        Ok(status) => status,
        Err(NodeError::ShuttingDown) => return Err(ApiError::shutting_down("the node is shutting down")),
        Err(error) => {
            return Err(ApiError::not_ready(format!(
                "the node did not report its status: {error}"
            )))
        }
    };
    let leader = status.raft.leader.map(|id| id.get());
    let reasons = unready_reasons(&status, state.limits.ready_apply_lag_entries_max);
    if !reasons.is_empty() {
        return Err(ApiError::not_ready(reasons.join("; ")).with_leader(leader));
    }
    let body = json!({
        "ready": true,
        "leader": leader,
        "commit_index": status.raft.hard_state.commit.get(),
        "applied_index": status.raft.applied.get(),
    });
    Ok(Json(body).into_response())
}

pub(super) async fn metrics(State(state): State<ApiState>) -> Response {
    let text = crate::metrics::render(&state.node.metrics(), &state.metrics);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}
