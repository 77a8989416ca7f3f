//! The cluster routes: `GET /v1/cluster`, `POST /v1/cluster/members`,
//! `DELETE /v1/cluster/members/{id}` and `POST /v1/cluster/leader`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel::{NodeId, Role};
use keel_node::{MemberChange, MemberInfo, NodeStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::body::json_from;
use super::error::{node_error, ApiError, ApiResult};
use super::{ApiState, MemberMetadata};

/// A member in `GET /v1/cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its id.
    pub id: u64,
    /// Its peer address.
    pub peer_addr: Option<String>,
    /// Its client address.
    pub client_addr: Option<String>,
    /// `voter` or `learner`.
    pub role: String,
}

/// `GET /v1/cluster`: this node's view of the cluster.
///
/// ```
/// let view: keel_kv::api::ClusterView = serde_json::from_str(
///     r#"{"id":3,"cluster_id":"92f597ddcab1a84d","role":"follower","term":4,"leader":1,
///         "commit_index":9,"applied_index":9,"removed":false,"members":[]}"#,
/// ).unwrap();
/// assert_eq!(view.cluster_id.as_deref(), Some("92f597ddcab1a84d"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's id.
    pub id: u64,
    /// The cluster's id (16 hex digits), which peers handshake with; what
    /// `serve --join --cluster-id` needs. `null` when the server was not
    /// told (an in-process server).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// `leader`, `follower`, `candidate` or `pre_candidate`.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<u64>,
    /// The highest index known committed.
    pub commit_index: u64,
    /// The highest index applied.
    pub applied_index: u64,
    /// Whether this node learned that it was removed from the cluster: it
    /// serves nothing but this view, probes and stale reads (and exits,
    /// unless started with `--stay-up-when-removed`).
    #[serde(default)]
    pub removed: bool,
    /// Every member.
    pub members: Vec<MemberView>,
}

fn role_name(role: Role) -> String {
    match role {
        Role::Leader => "leader".to_string(),
        Role::Follower => "follower".to_string(),
        Role::Candidate => "candidate".to_string(),
        Role::PreCandidate => "pre_candidate".to_string(),
    }
}

/// Builds the cluster view from a node's status, with the cluster's id
/// when known.
///
/// ```no_run
/// # async fn run(node: keel_node::NodeHandle<keel_kv::store::KvStore>) -> Result<(), keel_node::NodeError> {
/// let view = keel_kv::api::cluster_view(&node.status().await?, Some(0x2a));
/// assert_eq!(view.cluster_id.as_deref(), Some("000000000000002a"));
/// # Ok(())
/// # }
/// ```
pub fn cluster_view(status: &NodeStatus, cluster_id: Option<u64>) -> ClusterView {
    let raft = &status.raft;
    let conf = &raft.conf_state;
    let mut members: BTreeMap<NodeId, &'static str> = BTreeMap::new();
    for id in conf.learners().iter().chain(conf.learners_next()) {
        members.insert(*id, "learner");
    }
    for id in conf.voters().iter().chain(conf.voters_outgoing()) {
        members.insert(*id, "voter");
    }
    let members = members
        .into_iter()
        .map(|(id, role)| {
            let info = status.members.get(&id);
            MemberView {
                id: id.get(),
                peer_addr: info.map(|info| info.peer_address.clone()),
                client_addr: info
                    .and_then(|info| MemberMetadata::decode(&info.metadata))
                    .map(|metadata| metadata.client_addr),
                role: role.to_string(),
            }
        })
        .collect();
    ClusterView {
        id: raft.id.get(),
        cluster_id: cluster_id.map(crate::cluster_identity::format_cluster_id),
        role: role_name(raft.role),
        term: raft.hard_state.term.get(),
        leader: raft.leader.map(|id| id.get()),
        commit_index: raft.hard_state.commit.get(),
        applied_index: raft.applied.get(),
        removed: status.removed.is_some(),
        members,
    }
}

pub(super) async fn status(state: &ApiState) -> ApiResult<NodeStatus> {
    match state.node.status().await {
        Ok(status) => Ok(status),
        Err(error) => Err(node_error(state, error).await),
    }
}

pub(super) async fn get_cluster(State(state): State<ApiState>) -> ApiResult<Json<ClusterView>> {
    Ok(Json(cluster_view(&status(&state).await?, state.cluster_id)))
}

/// The body of `POST /v1/cluster/members`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMemberBody {
    id: u64,
    peer_addr: String,
    client_addr: String,
    #[serde(default)]
    role: Option<String>,
}

pub(super) async fn add_member(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body: AddMemberBody = json_from(body)?;
    if body.id == 0 {
        return Err(ApiError::bad_request("member ids start at 1"));
    }
    for (name, address) in [("peer_addr", &body.peer_addr), ("client_addr", &body.client_addr)] {
        if address.is_empty() || address.len() > 256 {
            return Err(ApiError::bad_request(format!("{name} must be 1 to 256 bytes")));
        }
    }
    let info = MemberInfo {
        peer_address: body.peer_addr,
        metadata: MemberMetadata {
            client_addr: body.client_addr,
        }
        .encode(),
    };
    let id = NodeId::new(body.id);
    let change = match body.role.as_deref() {
        None | Some("voter") => MemberChange::AddVoter(id, info),
        Some("learner") => MemberChange::AddLearner(id, Some(info)),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "role must be voter or learner, not {other:?}"
            )))
        }
    };
    match state.node.change_membership(vec![change]).await {
        Ok(()) => Ok(Json(json!({ "id": body.id })).into_response()),
        Err(error) => Err(node_error(&state, error).await),
    }
}

fn member_id(path: Result<Path<String>, PathRejection>) -> ApiResult<NodeId> {
    let Path(id) = path.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    match id.parse::<u64>() {
        Ok(id) if id > 0 => Ok(NodeId::new(id)),
        _ => Err(ApiError::bad_request(format!("{id:?} is not a member id"))),
    }
}

fn is_member(status: &NodeStatus, id: NodeId) -> bool {
    let conf = &status.raft.conf_state;
    conf.voters().contains(&id) || conf.learners().contains(&id) || conf.voters_outgoing().contains(&id)
}

pub(super) async fn remove_member(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = member_id(path)?;
    if !is_member(&status(&state).await?, id) {
        return Err(ApiError::not_found(format!("{id} is not a member")));
    }
    match state.node.remove_member(id).await {
        Ok(()) => Ok(Json(json!({ "id": id.get() })).into_response()),
        Err(error) => Err(node_error(&state, error).await),
    }
}

/// The body of `POST /v1/cluster/leader`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    id: u64,
}

pub(super) async fn transfer_leader(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body: TransferBody = json_from(body)?;
    let target = NodeId::new(body.id);
    let current = status(&state).await?;
    if !current.raft.conf_state.voters().contains(&target) {
        return Err(ApiError::not_found(format!("{target} is not a voter")));
    }
    match state.node.transfer_leader(target).await {
        Ok(()) => Ok(Json(json!({ "leader": body.id })).into_response()),
        Err(error) => Err(node_error(&state, error).await),
    }
}
