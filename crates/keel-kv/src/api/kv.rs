//! The key-value routes: `PUT`, `GET`, `DELETE /v1/kv/{key}` and
//! `POST /v1/kv/{key}/cas`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_node::Consistency;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::body::{body_from, json_from};
use super::error::{node_error, ApiError, ApiResult};
use super::key::{key_of, KeyRoute};
use super::{ApiLimits, ApiState};
use crate::store::{Command, Query as StoreQuery, QueryResponse, Response as StoreResponse};

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

fn unexpected(response: StoreResponse) -> ApiError {
    ApiError::internal(format!("unexpected state machine response {response:?}"))
}

pub(super) async fn put_key(
    State(state): State<ApiState>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let key = key_of(&uri, KeyRoute::Value)?;
    let value = body_from(body)?;
    check_value_size(&state.limits, value.len())?;
    match write(&state, Command::Put { key, value }).await? {
        StoreResponse::Put { index } => Ok(Json(json!({ "index": index })).into_response()),
        other => Err(unexpected(other)),
    }
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
pub(super) struct ReadParams {
    consistency: Option<String>,
}

pub(super) async fn get_key(
    State(state): State<ApiState>,
    uri: Uri,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> ApiResult<Response> {
    let key = key_of(&uri, KeyRoute::Value)?;
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
        Ok(QueryResponse::Len(_)) => Err(ApiError::internal("unexpected query response")),
        Err(error) => Err(node_error(&state, error).await),
    }
}

pub(super) async fn delete_key(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    let key = key_of(&uri, KeyRoute::Value)?;
    match write(&state, Command::Delete { key }).await? {
        StoreResponse::Delete { index, deleted } => {
            Ok(Json(json!({ "index": index, "deleted": deleted })).into_response())
        }
        other => Err(unexpected(other)),
    }
}

/// The body of a compare-and-set: both fields are required, and `null`
/// means absent. An omitted field is an error rather than `null`: a client
/// that forgot `value` must not delete the key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    #[serde(default, deserialize_with = "present")]
    expected: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Option<String>>,
}

/// A field that was given, `null` or not (an omitted one stays `None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

pub(super) async fn cas_key(
    State(state): State<ApiState>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let key = key_of(&uri, KeyRoute::CompareAndSet)?;
    let body: CasBody = json_from(body)?;
    let missing = |name: &str| {
        ApiError::bad_request(format!(
            "the field {name:?} is missing (write null for an absent value)"
        ))
    };
    let expected = body.expected.ok_or_else(|| missing("expected"))?;
    let value = body.value.ok_or_else(|| missing("value"))?;
    for field in [&expected, &value].into_iter().flatten() {
        check_value_size(&state.limits, field.len())?;
    }
    let command = Command::Cas {
        key,
        expected: expected.map(Bytes::from),
        value: value.map(Bytes::from),
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
