//! A small HTTP client for the keel-kv API, used by the CLI, the load
//! generator and the tests. It keeps connections alive per endpoint and
//! fails over to the next endpoint only when a connection cannot be made
//! (so a request that may have reached a server is never sent twice).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

/// The largest response body the client reads: a value of the largest
/// configurable size, with room to spare.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// The `error` code of an error body, if it is one.
    pub fn error_code(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value.get("error")?.as_str().map(str::to_string)
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made: the request was not sent.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// No answer in time: the request may or may not have been handled.
    #[error("no answer from {endpoint} in time")]
    Timeout {
        /// The endpoint.
        endpoint: String,
    },
    /// The connection failed after the request was sent, or the answer
    /// was malformed: the request may or may not have been handled.
    #[error("request to {endpoint} failed: {reason}")]
    Broken {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The request could not be built (a bad endpoint).
    #[error("bad request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// A short name for tables of errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "connect",
            ClientError::Timeout { .. } => "client_timeout",
            ClientError::Broken { .. } => "broken_connection",
            ClientError::Invalid(_) => "invalid",
        }
    }
}

/// Adds `http://` to a `host:port` endpoint.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.starts_with("http://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// Percent-encodes a key as one path segment (everything but RFC 3986's
/// unreserved characters).
pub fn encode_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A client of one cluster.
pub struct KvClient {
    endpoints: Vec<String>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    preferred: AtomicUsize,
}

impl KvClient {
    /// A client of the nodes at `endpoints` (`host:port` or URLs); each
    /// request waits at most `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(2))));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        KvClient {
            endpoints: endpoints
                .iter()
                .map(|endpoint| normalize_endpoint(endpoint))
                .collect(),
            http,
            timeout,
            preferred: AtomicUsize::new(0),
        }
    }

    /// The endpoints, normalized.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Sends one request to one endpoint.
    ///
    /// # Errors
    /// [`ClientError`] when no answer came.
    pub async fn request_to(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<HttpResponse, ClientError> {
        let endpoint = normalize_endpoint(endpoint);
        let mut builder = Request::builder().method(method).uri(format!("{endpoint}{path}"));
        if !body.is_empty() {
            builder = builder.header(hyper::header::CONTENT_LENGTH, body.len());
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|error| ClientError::Invalid(error.to_string()))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|error| {
                if error.is_connect() {
                    ClientError::Connect {
                        endpoint: endpoint.clone(),
                        reason: error.to_string(),
                    }
                } else {
                    ClientError::Broken {
                        endpoint: endpoint.clone(),
                        reason: error.to_string(),
                    }
                }
            })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
                .collect()
                .await
                .map_err(|error| ClientError::Broken {
                    endpoint: endpoint.clone(),
                    reason: error.to_string(),
                })?
                .to_bytes();
            Ok(HttpResponse { status, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                endpoint: endpoint.clone(),
            }),
        }
    }

    /// Sends a request to the preferred endpoint, moving on to the next
    /// ones while connections are refused.
    ///
    /// # Errors
    /// The last [`ClientError`] when no endpoint answered.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<HttpResponse, ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::Invalid("no endpoints".to_string()));
        }
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..self.endpoints.len() {
            let position = (start + offset) % self.endpoints.len();
            match self
                .request_to(&self.endpoints[position], method.clone(), path, body.clone())
                .await
            {
                Err(error @ ClientError::Connect { .. }) => last_error = Some(error),
                result => {
                    self.preferred.store(position, Ordering::Relaxed);
                    return result;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::Invalid("no endpoints".to_string())))
    }
}
