//! Request bodies: read whole, within a deadline and a memory budget,
//! *before* a request counts against the in-flight limit.
//!
//! The in-flight limit bounds the work the node is asked to do at once. If
//! a request took its slot before its body arrived, a few hundred clients
//! that declare a body and never send it would hold every slot, and even
//! `/healthz` would wait behind them. So a body is read first, on its own
//! budgets:
//!
//! - **time**: the whole body must arrive within
//!   [`ApiLimits::body_read_timeout`](super::ApiLimits::body_read_timeout)
//!   of the handler starting, or the answer is `408 body_timeout` and the
//!   connection closes;
//! - **memory**: bodies being read and the requests holding them share
//!   [`ApiLimits::body_bytes_buffered_max`](super::ApiLimits::body_bytes_buffered_max)
//!   bytes, taken as each piece arrives (a client that declares a length
//!   and sends nothing holds nothing). A body that cannot get its bytes
//!   before its deadline is answered `503 overloaded`.
//!
//! Only then does the request wait for an in-flight slot.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout_at, Instant};

use super::error::{ApiError, ApiResult};
use super::ApiState;

/// How much of a refused body is read and discarded, at most.
const DRAIN_BYTES_MAX: u64 = 1024 * 1024;
/// How long a refused body is drained, at most.
const DRAIN_TIME_MAX: Duration = Duration::from_secs(2);

/// Middleware: refuses a body declared over `limit_bytes` before reading
/// any of it, reads any other body whole (see the module docs), and runs
/// the rest of the request with the body in memory and its bytes held.
pub(super) async fn buffer_body(
    state: ApiState,
    limit_bytes: usize,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > limit_bytes as u64) {
        return refuse_declared_length(request, length, limit_bytes).await;
    }
    let (parts, body) = request.into_parts();
    let read_timeout = state.limits.body_read_timeout;
    match read_whole(body, limit_bytes, &state.body_budget, read_timeout).await {
        Ok((bytes, held)) => {
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            // The body's bytes are in memory until the handler is done.
            drop(held);
            response
        }
        Err(error) => error.into_response(),
    }
}

/// Answers `413` from the declared length alone. Closing a connection with
/// unread data resets it, and the client may lose the answer: a body only
/// a little too large is read (bounded in bytes and time) and discarded.
async fn refuse_declared_length(request: Request, length: u64, limit_bytes: usize) -> Response {
    let answer = ApiError::too_large(format!(
        "the body is {length} bytes; at most {limit_bytes} are allowed"
    ));
    if length <= (limit_bytes as u64).saturating_add(DRAIN_BYTES_MAX) {
        let mut body = request.into_body();
        let drain = async { while let Some(Ok(_)) = body.frame().await {} };
        let _ = tokio::time::timeout(DRAIN_TIME_MAX, drain).await;
    }
    answer.closing().into_response()
}

/// The body so far: most bodies arrive in one piece, kept without a copy.
enum Buffer {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Buffer {
    fn len(&self) -> usize {
        match self {
            Buffer::Empty => 0,
            Buffer::One(bytes) => bytes.len(),
            Buffer::Many(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Buffer::Empty) {
            Buffer::Empty => Buffer::One(data),
            Buffer::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + data.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&data);
                Buffer::Many(joined)
            }
            Buffer::Many(mut joined) => {
                joined.extend_from_slice(&data);
                Buffer::Many(joined)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Buffer::Empty => Bytes::new(),
            Buffer::One(bytes) => bytes,
            Buffer::Many(bytes) => bytes.freeze(),
        }
    }
}

/// Reads `body` to its end within `read_timeout`, taking budget for every
/// piece before keeping it. Returns the body and the budget it holds.
async fn read_whole(
    mut body: Body,
    limit_bytes: usize,
    budget: &Arc<Semaphore>,
    read_timeout: Duration,
) -> ApiResult<(Bytes, Option<OwnedSemaphorePermit>)> {
    let deadline = Instant::now() + read_timeout;
    let mut buffer = Buffer::Empty;
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        let frame = match timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::body_timeout(read_timeout)),
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return Err(ApiError::bad_request(format!("reading the body failed: {error}")).closing())
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing the API uses.
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if buffer.len() + data.len() > limit_bytes {
            return Err(ApiError::too_large(format!(
                "the body is over {limit_bytes} bytes, the most allowed here"
            ))
            .closing());
        }
        let permit = take_budget(budget, data.len(), deadline).await?;
        match &mut held {
            Some(held) => held.merge(permit),
            None => held = Some(permit),
        }
        buffer.push(data);
    }
    Ok((buffer.into_bytes(), held))
}

async fn take_budget(
    budget: &Arc<Semaphore>,
    bytes: usize,
    deadline: Instant,
) -> ApiResult<OwnedSemaphorePermit> {
    // A piece is at most one read of the connection's buffer, far below
    // u32::MAX.
    let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
    match timeout_at(deadline, budget.clone().acquire_many_owned(permits)).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(ApiError::shutting_down("the server is stopping")),
        Err(_) => Err(
            ApiError::overloaded("the server holds as many request bodies as it may; retry later").closing(),
        ),
    }
}

/// Middleware: at most `requests_in_flight_max` requests run at once; more
/// wait for a slot. Runs after [`buffer_body`], so only requests whose body
/// is in memory wait here.
pub(super) async fn limit_in_flight(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match state.in_flight.clone().acquire_owned().await {
        Ok(_slot) => next.run(request).await,
        Err(_) => ApiError::shutting_down("the server is stopping").into_response(),
    }
}

/// The body extracted by a handler (already in memory, see
/// [`buffer_body`]); an error if reading it failed.
pub(super) fn body_from(body: Result<Bytes, axum::extract::rejection::BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(rejection.body_text())
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })
}

/// The body as JSON of type `T`.
pub(super) fn json_from<T: for<'de> serde::Deserialize<'de>>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<T> {
    let body = body_from(body)?;
    serde_json::from_slice(&body).map_err(|error| ApiError::bad_request(format!("bad JSON: {error}")))
}
