//! Keys from the request path, decoded strictly.
//!
//! A key is one path segment, percent-decoded. The router's own decoding
//! keeps an invalid escape (`%zz`) as literal text, so `/v1/kv/%zz` would
//! name the three-character key `%zz` while a client that meant an escape
//! gets no error. Keys are therefore decoded here from the raw path: every
//! `%` must start a two-digit hex escape, and the result must be UTF-8.

use axum::http::Uri;

use super::error::{ApiError, ApiResult};
use crate::store::check_key;

/// Which of the two key routes a request took.
#[derive(Clone, Copy, Debug)]
pub(super) enum KeyRoute {
    /// `/v1/kv/{key}`
    Value,
    /// `/v1/kv/{key}/cas`
    CompareAndSet,
}

const KEY_PREFIX: &str = "/v1/kv/";
const CAS_SUFFIX: &str = "/cas";

/// The key a request on `route` names.
pub(super) fn key_of(uri: &Uri, route: KeyRoute) -> ApiResult<String> {
    let path = uri.path();
    let segment = path.strip_prefix(KEY_PREFIX).and_then(|rest| match route {
        KeyRoute::Value => Some(rest),
        KeyRoute::CompareAndSet => rest.strip_suffix(CAS_SUFFIX),
    });
    let Some(segment) = segment.filter(|segment| !segment.contains('/')) else {
        // The router matched the route, so this cannot happen; answer
        // rather than assert.
        return Err(ApiError::bad_request(format!("no key in the path {path:?}")));
    };
    let bytes = percent_decode(segment).map_err(ApiError::bad_request)?;
    let key = String::from_utf8(bytes).map_err(|_| ApiError::bad_request("the key is not UTF-8"))?;
    check_key(&key).map_err(|error| ApiError::bad_request(error.to_string()))?;
    Ok(key)
}

/// Decodes `%XX` escapes; any other use of `%` is an error.
fn percent_decode(segment: &str) -> Result<Vec<u8>, String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        if bytes[position] != b'%' {
            decoded.push(bytes[position]);
            position += 1;
            continue;
        }
        let escape = bytes.get(position + 1..position + 3);
        let value = escape.and_then(|digits| Some(hex_value(digits[0])? * 16 + hex_value(digits[1])?));
        let Some(value) = value else {
            let shown: String = segment[position..].chars().take(3).collect();
            return Err(format!(
                "invalid percent escape {shown:?} in the key at byte {position}: a % must be followed by two hex digits (write %25 for a literal %)"
            ));
        };
        decoded.push(value);
        position += 3;
    }
    Ok(decoded)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str, route: KeyRoute) -> Result<String, String> {
        let uri: Uri = path.parse().map_err(|_| "bad uri".to_string())?;
        key_of(&uri, route).map_err(|error| error.code().to_string())
    }

    #[test]
    fn escapes_decode_and_invalid_ones_are_refused() {
        assert_eq!(key("/v1/kv/a%20b", KeyRoute::Value), Ok("a b".to_string()));
        assert_eq!(key("/v1/kv/%E2%9C%93", KeyRoute::Value), Ok("✓".to_string()));
        assert_eq!(key("/v1/kv/100%25", KeyRoute::Value), Ok("100%".to_string()));
        assert_eq!(key("/v1/kv/cas", KeyRoute::Value), Ok("cas".to_string()));
        assert_eq!(
            key("/v1/kv/cas/cas", KeyRoute::CompareAndSet),
            Ok("cas".to_string())
        );
        for bad in [
            "/v1/kv/%zz",
            "/v1/kv/a%2",
            "/v1/kv/a%",
            "/v1/kv/%G0",
            "/v1/kv/%FF%FE",
        ] {
            assert_eq!(key(bad, KeyRoute::Value), Err("bad_request".to_string()), "{bad}");
        }
        assert_eq!(
            key("/v1/kv/%zz/cas", KeyRoute::CompareAndSet),
            Err("bad_request".to_string())
        );
    }
}
