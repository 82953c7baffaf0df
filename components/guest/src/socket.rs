//! What nexus's WebSocket handlers (`components/*-socket`) share: the query of the upgrade
//! request, and a refused upgrade's body in the APIs' envelope. Each handler's bindings are its
//! own (`wit_bindgen::generate!` in the component), so [`socket_helpers!`](crate::socket_helpers)
//! writes the few functions that name their types in the handler's crate.

use serde_json::json;

/// The decoded `key=value` pairs of a request target's query (`/path?a=1&b=2`).
pub fn query_pairs(path_with_query: &str) -> Vec<(String, String)> {
    let query = path_with_query
        .split_once('?')
        .map_or("", |(_, query)| query);
    form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

/// The first value of `key` in a request target's query, decoded.
pub fn query_value(path_with_query: &str, key: &str) -> Option<String> {
    query_pairs(path_with_query)
        .into_iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value)
}

/// A refused upgrade's JSON body: `{"status": {"code", "message"}}`, as the REST APIs answer.
pub fn refusal_body(code: &str, message: &str) -> Vec<u8> {
    json!({"status": {"code": code, "message": message}})
        .to_string()
        .into_bytes()
}

/// Writes, in a socket handler's crate, `refuse(status, code, message)` and
/// `refusal(&ApiError)` (its `Refusal`s) and `send(connection, &Value)` (a text frame; a socket
/// already gone is no error). `Refusal`, `connections` and `Frame` are the names its bindings
/// give them, in scope where the macro is called.
#[macro_export]
macro_rules! socket_helpers {
    () => {
        #[allow(dead_code)]
        fn refuse(status: u16, code: &str, message: &str) -> Refusal {
            Refusal {
                status,
                content_type: "application/json".into(),
                body: $crate::socket::refusal_body(code, message),
            }
        }

        #[allow(dead_code)]
        fn refusal(err: &$crate::api::ApiError) -> Refusal {
            refuse(err.http_status, err.code.as_str(), &err.message)
        }

        #[allow(dead_code)]
        fn send(connection: &str, event: &::serde_json::Value) {
            let _ = connections::send(connection, &Frame::Text(event.to_string()));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let target = "/nexus/v3/x/socket?after=12&access_token=a%2Bb&empty=&flag";
        assert_eq!(query_value(target, "after").as_deref(), Some("12"));
        assert_eq!(query_value(target, "access_token").as_deref(), Some("a+b"));
        assert_eq!(query_value(target, "empty").as_deref(), Some(""));
        assert_eq!(query_value(target, "flag").as_deref(), Some(""));
        assert_eq!(query_value(target, "missing"), None);
        assert_eq!(query_value("/no/query", "after"), None);
        assert_eq!(query_pairs("/p?a=1&a=2").len(), 2);
    }

    #[test]
    fn a_refusal_is_the_api_envelope() {
        let body: serde_json::Value =
            serde_json::from_slice(&refusal_body("NOT_FOUND", "no such campaign")).unwrap();
        assert_eq!(
            body,
            json!({"status": {"code": "NOT_FOUND", "message": "no such campaign"}})
        );
    }
}
