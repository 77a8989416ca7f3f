//! The HTTP API of KV_API.md: routes, request limits and the error body.
//!
//! Every handler answers with either its success body or an [`ApiError`],
//! which renders as `{"error": code, "message": …, "leader": id|null}`.
//! Nothing a client sends can make a handler panic or drop the connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use keel::{NodeId, Role};
use keel_node::{Consistency, MemberChange, MemberInfo, NodeError, NodeHandle, NodeStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::metrics::HttpMetrics;
use crate::store::{
    check_key, Command, KvStore, Query as StoreQuery, QueryResponse, Response as StoreResponse,
};

/// The limits the API enforces on clients.
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    /// The largest value accepted by a put or a compare-and-set.
    pub value_bytes_max: usize,
    /// The most requests handled at once; more wait (without their body
    /// being read) until one finishes. With the body limits this bounds the
    /// memory clients can make the server hold.
    pub requests_in_flight_max: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            value_bytes_max: 1024 * 1024,
            requests_in_flight_max: 256,
        }
    }
}

/// The largest JSON body of a membership or leadership request.
const SMALL_BODY_BYTES_MAX: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    node: NodeHandle<KvStore>,
    limits: ApiLimits,
    in_flight: Arc<Semaphore>,
    metrics: Arc<HttpMetrics>,
}

impl ApiState {
    /// The state of a server in front of `node`.
    pub fn new(node: NodeHandle<KvStore>, limits: ApiLimits) -> Self {
        ApiState {
            node,
            limits,
            in_flight: Arc::new(Semaphore::new(limits.requests_in_flight_max.max(1))),
            metrics: Arc::new(HttpMetrics::default()),
        }
    }
}

/// The metadata keel-kv attaches to each member: its client address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMetadata {
    /// Where the member serves the HTTP API.
    pub client_addr: String,
}

impl MemberMetadata {
    /// Encodes the metadata for [`MemberInfo::metadata`].
    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes it; `None` for empty or foreign metadata.
    pub fn decode(data: &[u8]) -> Option<Self> {
        serde_json::from_slice(data).ok()
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    leader: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            leader: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn with_leader(mut self, leader: Option<u64>) -> Self {
        self.leader = leader;
        self
    }

    /// Maps a node error to an answer, per KV_API.md.
    fn from_node(error: NodeError) -> Self {
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        match error {
            NodeError::NoLeader => ApiError::new(unavailable, "no_leader", error.to_string()),
            NodeError::NotLeader { leader } => ApiError::new(unavailable, "no_leader", error.to_string())
                .with_leader(leader.map(|id| id.get())),
            NodeError::Timeout => ApiError::new(unavailable, "timeout", error.to_string()),
            NodeError::ShuttingDown => ApiError::new(unavailable, "shutting_down", error.to_string()),
            NodeError::Conflict(reason) => ApiError::new(StatusCode::CONFLICT, "conflict", reason),
            NodeError::Overloaded => ApiError::new(unavailable, "overloaded", error.to_string()),
            NodeError::Refused(reason) => ApiError::bad_request(reason),
            NodeError::Fatal(reason) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the node stopped: {reason}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code, "message": self.message, "leader": self.leader});
        (self.status, Json(body)).into_response()
    }
}

/// Fills in the leader hint of an unavailability error, without waiting
/// long: the hint is a courtesy, the error is the answer.
async fn node_error(state: &ApiState, error: NodeError) -> ApiError {
    let error = ApiError::from_node(error);
    if error.leader.is_some() || error.status != StatusCode::SERVICE_UNAVAILABLE {
        return error;
    }
    let status = tokio::time::timeout(Duration::from_millis(100), state.node.status()).await;
    let leader = status
        .ok()
        .and_then(Result::ok)
        .and_then(|status| status.raft.leader);
    error.with_leader(leader.map(|id| id.get()))
}

type ApiResult<T> = Result<T, ApiError>;

fn key_from(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(key) =
        path.map_err(|rejection| ApiError::bad_request(format!("bad key: {}", rejection.body_text())))?;
    check_key(&key).map_err(|error| ApiError::bad_request(error.to_string()))?;
    Ok(key)
}

fn body_from(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(rejection.body_text())
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })
}

fn json_from<T: for<'de> Deserialize<'de>>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body_from(body)?;
    serde_json::from_slice(&body).map_err(|error| ApiError::bad_request(format!("bad JSON: {error}")))
}

fn check_value_size(limits: &ApiLimits, length: usize) -> ApiResult<()> {
    if length > limits.value_bytes_max {
        return Err(ApiError::too_large(format!(
            "the value is {length} bytes; at most {} are allowed",
            limits.value_bytes_max
        )));
    }
    Ok(())
}

async fn write(state: &ApiState, command: Command) -> ApiResult<StoreResponse> {
    match state.node.write(command).await {
        Ok(response) => Ok(response),
        Err(error) => Err(node_error(state, error).await),
    }
}

async fn put_key(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let key = key_from(path)?;
    let value = body_from(body)?;
    check_value_size(&state.limits, value.len())?;
    match write(&state, Command::Put { key, value }).await? {
        StoreResponse::Put { index } => Ok(Json(json!({ "index": index })).into_response()),
        other => Err(unexpected(other)),
    }
}

fn unexpected(response: StoreResponse) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("unexpected state machine response {response:?}"),
    )
}

/// `?consistency=` of a read: `linearizable` (the default, ReadIndex),
/// `lease` or `stale`.
///
/// A `lease` read is answered by the leader from its lease, without a round
/// trip, and is linearizable under the lease's clock assumption (thesis
/// §6.4.1, see [`Consistency::Lease`]): the members' clocks run at rates
/// that differ by at most `max_clock_drift_percent` (10%, keel's default),
/// every member has the same `--heartbeat-ms` and `--election-timeout-ms`,
/// and time is measured by the monotonic clock, pauses included: a leader
/// stopped (SIGSTOP, a VM stall) past its lease charges that time before it
/// answers, and falls back to a ReadIndex round or to `no_leader` instead
/// of serving from the expired lease.
#[derive(Deserialize)]
struct ReadParams {
    consistency: Option<String>,
}

async fn get_key(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> ApiResult<Response> {
    let key = key_from(path)?;
    let Query(params) = params.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let consistency = match params.consistency.as_deref() {
        None | Some("linearizable") => Consistency::Linearizable,
        Some("lease") => Consistency::Lease,
        Some("stale") => Consistency::Stale,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "consistency must be linearizable, lease or stale, not {other:?}"
            )))
        }
    };
    match state.node.read(StoreQuery::Get(key), consistency).await {
        Ok(QueryResponse::Value(Some(value))) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            value,
        )
            .into_response()),
        Ok(QueryResponse::Value(None)) => Err(ApiError::not_found("no such key")),
        Ok(QueryResponse::Len(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected query response",
        )),
        Err(error) => Err(node_error(&state, error).await),
    }
}

async fn delete_key(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let key = key_from(path)?;
    match write(&state, Command::Delete { key }).await? {
        StoreResponse::Delete { index, deleted } => {
            Ok(Json(json!({ "index": index, "deleted": deleted })).into_response())
        }
        other => Err(unexpected(other)),
    }
}

/// The body of a compare-and-set: `null` means absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    expected: Option<String>,
    value: Option<String>,
}

async fn cas_key(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let key = key_from(path)?;
    let body: CasBody = json_from(body)?;
    for field in [&body.expected, &body.value].into_iter().flatten() {
        check_value_size(&state.limits, field.len())?;
    }
    let command = Command::Cas {
        key,
        expected: body.expected.map(Bytes::from),
        value: body.value.map(Bytes::from),
    };
    match write(&state, command).await? {
        StoreResponse::Cas {
            index,
            outcome: Ok(()),
        } => Ok(Json(json!({ "ok": true, "index": index })).into_response()),
        StoreResponse::Cas {
            outcome: Err(current),
            ..
        } => {
            // Values written through the JSON API are UTF-8; a raw value
            // put with `PUT` may not be, and is shown lossily.
            let current = current.map(|value| String::from_utf8_lossy(&value).into_owned());
            Ok((
                StatusCode::CONFLICT,
                Json(json!({ "ok": false, "current": current })),
            )
                .into_response())
        }
        other => Err(unexpected(other)),
    }
}

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's id.
    pub id: u64,
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

/// Builds the cluster view from a node's status.
pub fn cluster_view(status: &NodeStatus) -> ClusterView {
    let raft = &status.raft;
    let conf = &raft.conf_state;
    let mut members: BTreeMap<NodeId, &'static str> = BTreeMap::new();
    for id in conf.learners.iter().chain(&conf.learners_next) {
        members.insert(*id, "learner");
    }
    for id in conf.voters.iter().chain(&conf.voters_outgoing) {
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
        role: role_name(raft.role),
        term: raft.hard_state.term.get(),
        leader: raft.leader.map(|id| id.get()),
        commit_index: raft.hard_state.commit.get(),
        applied_index: raft.applied.get(),
        members,
    }
}

async fn status(state: &ApiState) -> ApiResult<NodeStatus> {
    match state.node.status().await {
        Ok(status) => Ok(status),
        Err(error) => Err(node_error(state, error).await),
    }
}

async fn get_cluster(State(state): State<ApiState>) -> ApiResult<Json<ClusterView>> {
    Ok(Json(cluster_view(&status(&state).await?)))
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

async fn add_member(
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
    conf.voters.contains(&id) || conf.learners.contains(&id) || conf.voters_outgoing.contains(&id)
}

async fn remove_member(
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

async fn transfer_leader(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body: TransferBody = json_from(body)?;
    let target = NodeId::new(body.id);
    let current = status(&state).await?;
    if !current.raft.conf_state.voters.contains(&target) {
        return Err(ApiError::not_found(format!("{target} is not a voter")));
    }
    match state.node.transfer_leader(target).await {
        Ok(()) => Ok(Json(json!({ "leader": body.id })).into_response()),
        Err(error) => Err(node_error(&state, error).await),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
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

async fn healthz() -> &'static str {
    "ok\n"
}

async fn empty_key() -> ApiError {
    ApiError::bad_request("the key is empty")
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route")
}

async fn wrong_method(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "bad_request",
        format!("method {method} is not allowed here"),
    )
}

/// Counts and times every request, and bounds how many run at once.
async fn track(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let method = request.method().clone();
    let started = Instant::now();
    let response = match state.in_flight.clone().acquire_owned().await {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is stopping",
        )
        .into_response(),
    };
    state.metrics.record(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Refuses a request whose declared length is over `limit` before any of
/// its body is read; bodies without a declared length are cut off at the
/// limit by the body extractor.
async fn refuse_declared_length(limit: usize, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => {
            let answer =
                ApiError::too_large(format!("the body is {length} bytes; at most {limit} are allowed"));
            // Closing a connection with unread data resets it, and the
            // client may lose the answer: read a body that is only a little
            // too large (bounded in bytes and time) and discard it.
            if length <= (limit as u64).saturating_add(DRAIN_BYTES_MAX) {
                let mut body = request.into_body();
                let drain =
                    async { while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {} };
                let _ = tokio::time::timeout(DRAIN_TIME_MAX, drain).await;
            }
            answer.into_response()
        }
        _ => next.run(request).await,
    }
}

/// How much of a refused body is read and discarded, at most.
const DRAIN_BYTES_MAX: u64 = 1024 * 1024;
const DRAIN_TIME_MAX: Duration = Duration::from_secs(2);

fn body_limit(router: Router<ApiState>, limit: usize) -> Router<ApiState> {
    router
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            refuse_declared_length(limit, request, next)
        }))
}

/// The API's router.
pub fn router(state: ApiState) -> Router {
    let value_limit = state.limits.value_bytes_max;
    // A compare-and-set carries two values as JSON strings, which may
    // escape every byte (`\u00XX`, six bytes each).
    let cas_limit = value_limit
        .saturating_mul(12)
        .saturating_add(SMALL_BODY_BYTES_MAX);
    let kv = body_limit(
        Router::new().route("/v1/kv/{key}", get(get_key).put(put_key).delete(delete_key)),
        value_limit,
    );
    let cas = body_limit(Router::new().route("/v1/kv/{key}/cas", post(cas_key)), cas_limit);
    let cluster = body_limit(
        Router::new()
            .route("/v1/cluster", get(get_cluster))
            .route("/v1/cluster/members", post(add_member))
            .route("/v1/cluster/members/{id}", delete(remove_member))
            .route("/v1/cluster/leader", post(transfer_leader)),
        SMALL_BODY_BYTES_MAX,
    );
    Router::new()
        .merge(kv)
        .merge(cas)
        .merge(cluster)
        .route("/v1/kv/", axum::routing::any(empty_key))
        .route("/v1/kv", axum::routing::any(empty_key))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}
