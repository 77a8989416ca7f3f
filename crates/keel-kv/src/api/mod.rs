//! The HTTP API of `docs/KV_API.md`: routes, request limits and the error
//! body.
//!
//! Every handler answers with either its success body or an [`ApiError`],
//! which renders as `{"error": code, "message": …, "leader": id|null}`.
//! Nothing a client sends can make a handler panic or drop the connection.
//!
//! - `error`: the error answer and how node errors map to its codes;
//! - `body`: bodies are read whole, within a deadline and a memory budget,
//!   before a request takes an in-flight slot;
//! - `key`: keys from the raw path, strictly percent-decoded;
//! - `kv`, `cluster`, `health`: the routes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use keel_node::NodeHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::metrics::HttpMetrics;
use crate::store::KvStore;

mod body;
mod cluster;
mod error;
mod health;
mod key;
mod kv;

pub use cluster::{cluster_view, ClusterView, MemberView};
pub(crate) use error::error_body;
pub use error::ApiError;

/// The limits the API enforces on clients, and the bound of readiness.
///
/// ```
/// use keel_kv::api::ApiLimits;
/// let limits = ApiLimits::default();
/// assert_eq!(limits.value_bytes_max, 1024 * 1024);
/// assert_eq!(limits.body_read_timeout.as_secs(), 10);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    /// The largest value accepted by a put or a compare-and-set.
    pub value_bytes_max: usize,
    /// The most requests handled at once, counted once their body is read;
    /// more wait until one finishes.
    pub requests_in_flight_max: usize,
    /// How long a request's head (request line and headers) may take to
    /// arrive, counted from the connection's first byte or the end of its
    /// previous request. A connection late by then, or idle that long, is
    /// closed: no request began, so there is no one to answer.
    pub header_read_timeout: Duration,
    /// How long a request's whole body may take to arrive, from the moment
    /// its head was read. A body late by then is answered `408
    /// body_timeout`, so a client that declares a body and sends too little
    /// holds nothing for longer than this.
    pub body_read_timeout: Duration,
    /// The most body bytes held in memory at once, across every request
    /// being read or handled. At least the largest body a route takes (a
    /// compare-and-set's, about 12 values) is allowed, whatever this says.
    pub body_bytes_buffered_max: usize,
    /// `/readyz` answers "not ready" while this node's applied index is
    /// more than this many entries behind its commit index.
    pub ready_apply_lag_entries_max: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            value_bytes_max: 1024 * 1024,
            requests_in_flight_max: 256,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            body_bytes_buffered_max: 256 * 1024 * 1024,
            ready_apply_lag_entries_max: 1_000,
        }
    }
}

impl ApiLimits {
    /// The largest body of a compare-and-set: two values as JSON strings,
    /// which may escape every byte (`\u00XX`, six bytes each).
    fn cas_body_bytes_max(&self) -> usize {
        self.value_bytes_max
            .saturating_mul(12)
            .saturating_add(SMALL_BODY_BYTES_MAX)
    }
}

/// The largest JSON body of a membership or leadership request.
const SMALL_BODY_BYTES_MAX: usize = 64 * 1024;

/// What every handler shares.
///
/// ```no_run
/// # async fn run(node: keel_node::NodeHandle<keel_kv::store::KvStore>) {
/// use keel_kv::api::{router, ApiLimits, ApiState};
/// let app = router(ApiState::new(node, ApiLimits::default()));
/// # }
/// ```
#[derive(Clone)]
pub struct ApiState {
    node: NodeHandle<KvStore>,
    limits: ApiLimits,
    in_flight: Arc<Semaphore>,
    /// One permit per body byte held in memory.
    body_budget: Arc<Semaphore>,
    metrics: Arc<HttpMetrics>,
    /// Reported in `GET /v1/cluster`, when known.
    cluster_id: Option<u64>,
}

impl ApiState {
    /// The state of a server in front of `node`.
    pub fn new(node: NodeHandle<KvStore>, limits: ApiLimits) -> Self {
        let body_bytes = limits
            .body_bytes_buffered_max
            .max(limits.cas_body_bytes_max())
            .min(Semaphore::MAX_PERMITS);
        ApiState {
            node,
            limits,
            in_flight: Arc::new(Semaphore::new(limits.requests_in_flight_max.max(1))),
            body_budget: Arc::new(Semaphore::new(body_bytes)),
            metrics: Arc::new(HttpMetrics::default()),
            cluster_id: None,
        }
    }

    /// The limits this state enforces.
    pub(crate) fn limits(&self) -> &ApiLimits {
        &self.limits
    }

    /// Reports `cluster_id` (the id peers handshake with) in
    /// `GET /v1/cluster`.
    ///
    /// ```no_run
    /// # fn run(node: keel_node::NodeHandle<keel_kv::store::KvStore>) {
    /// use keel_kv::api::{ApiLimits, ApiState};
    /// let state = ApiState::new(node, ApiLimits::default()).with_cluster_id(0x92f5_97dd_cab1_a84d);
    /// # }
    /// ```
    pub fn with_cluster_id(mut self, cluster_id: u64) -> Self {
        self.cluster_id = Some(cluster_id);
        self
    }
}

/// The metadata keel-kv attaches to each member: its client address.
///
/// ```
/// use keel_kv::api::MemberMetadata;
/// let metadata = MemberMetadata { client_addr: "127.0.0.1:8001".into() };
/// assert_eq!(MemberMetadata::decode(&metadata.encode()), Some(metadata));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMetadata {
    /// Where the member serves the HTTP API.
    pub client_addr: String,
}

impl MemberMetadata {
    /// Encodes the metadata for [`keel_node::MemberInfo::metadata`].
    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes it; `None` for empty or foreign metadata.
    pub fn decode(data: &[u8]) -> Option<Self> {
        serde_json::from_slice(data).ok()
    }
}

async fn empty_key() -> ApiError {
    ApiError::bad_request("the key is empty")
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route")
}

async fn wrong_method(method: Method) -> ApiError {
    ApiError::method_not_allowed(format!("method {method} is not allowed here"))
}

/// Counts and times every request.
async fn track(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.record(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Routes whose requests are read whole (at most `limit_bytes`) before
/// they wait for an in-flight slot (see `body`).
fn limited(routes: Router<ApiState>, state: &ApiState, limit_bytes: usize) -> Router<ApiState> {
    let buffering = state.clone();
    // Layers run outside in: the last added first.
    routes
        .layer(DefaultBodyLimit::max(limit_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            body::limit_in_flight,
        ))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            body::buffer_body(buffering.clone(), limit_bytes, request, next)
        }))
}

/// The API's router.
///
/// ```no_run
/// # async fn run(node: keel_node::NodeHandle<keel_kv::store::KvStore>) -> std::io::Result<()> {
/// use keel_kv::api::{router, ApiLimits, ApiState};
/// let app = router(ApiState::new(node, ApiLimits::default()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
pub fn router(state: ApiState) -> Router {
    let value_limit = state.limits.value_bytes_max;
    let kv = limited(
        Router::new().route(
            "/v1/kv/{key}",
            get(kv::get_key).put(kv::put_key).delete(kv::delete_key),
        ),
        &state,
        value_limit,
    );
    let cas = limited(
        Router::new().route("/v1/kv/{key}/cas", post(kv::cas_key)),
        &state,
        state.limits.cas_body_bytes_max(),
    );
    let cluster = limited(
        Router::new()
            .route("/v1/cluster", get(cluster::get_cluster))
            .route("/v1/cluster/members", post(cluster::add_member))
            .route("/v1/cluster/members/{id}", delete(cluster::remove_member))
            .route("/v1/cluster/leader", post(cluster::transfer_leader)),
        &state,
        SMALL_BODY_BYTES_MAX,
    );
    Router::new()
        .merge(kv)
        .merge(cas)
        .merge(cluster)
        .route("/v1/kv/", axum::routing::any(empty_key))
        .route("/v1/kv", axum::routing::any(empty_key))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}
