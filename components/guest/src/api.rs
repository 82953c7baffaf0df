//! The response envelope of nexus's REST APIs, as the original product's v3 APIs shape it:
//! `{referenceId, status: {code, message}, data}`, with `code` from a fixed set and the HTTP status
//! that goes with it.

use serde::Serialize;
use serde_json::{Value, json};

/// The `status.code` of a response. The first group is the original product's (shared by its
/// chat and secure-email APIs and the widgets' error table); the second is nexus's, for the
/// provisioning and history APIs, which the original does not publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Success,
    Failure,
    AuthenticationRequired,
    InvalidClientToken,
    InvalidContactCenter,
    InvalidSession,
    InvalidParticipant,
    InvalidTransport,
    InvalidParameter,
    InvalidEndpoint,
    InvalidNickname,
    LimitBodySize,
    /// A file of a type the endpoint does not take.
    InvalidFileType,
    /// A file larger than the endpoint takes.
    LimitFileSize,
    NotFound,
    Conflict,
    NotConfigured,
    Unavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Success => "SUCCESS",
            Code::Failure => "FAILURE",
            Code::AuthenticationRequired => "AUTHENTICATION_REQUIRED",
            Code::InvalidClientToken => "INVALID_CLIENT_TOKEN",
            Code::InvalidContactCenter => "INVALID_CONTACT_CENTER",
            Code::InvalidSession => "INVALID_SESSION",
            Code::InvalidParticipant => "INVALID_PARTICIPANT",
            Code::InvalidTransport => "INVALID_TRANSPORT",
            Code::InvalidParameter => "INVALID_PARAMETER",
            Code::InvalidEndpoint => "INVALID_ENDPOINT",
            Code::InvalidNickname => "INVALID_NICKNAME",
            Code::LimitBodySize => "LIMIT_BODY_SIZE",
            Code::InvalidFileType => "INVALID_FILE_TYPE",
            Code::LimitFileSize => "LIMIT_FILE_SIZE",
            Code::NotFound => "NOT_FOUND",
            Code::Conflict => "CONFLICT",
            Code::NotConfigured => "NOT_CONFIGURED",
            Code::Unavailable => "UNAVAILABLE",
        }
    }
}

/// A request that failed: the HTTP status, the code and a message meant for the caller. Internal
/// details (SQL errors, addresses) never go into the message; [`ApiError::internal`] logs them
/// instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub http_status: u16,
    pub code: Code,
    pub message: String,
    /// How long the caller should wait before it tries again (`Retry-After`, in seconds): the
    /// far side's own word when a job relays its refusal, so that the queue honours it.
    pub retry_after_seconds: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(http_status: u16, code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            http_status,
            code,
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    /// The same error, telling the caller to wait `seconds` (if known) before trying again.
    pub fn retry_after(mut self, seconds: Option<u64>) -> ApiError {
        self.retry_after_seconds = seconds;
        self
    }

    pub fn bad_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new(400, Code::InvalidParameter, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, Code::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, Code::Conflict, message)
    }

    /// A failure of the platform (database, Redis) behind the API. What went wrong is written to
    /// the component's log with `context`; the caller sees a 503 it may retry.
    pub fn internal(context: &str, detail: impl std::fmt::Debug) -> ApiError {
        eprintln!("{context}: {detail:?}");
        ApiError::new(
            503,
            Code::Unavailable,
            format!("{context}: the service is unavailable, try again"),
        )
    }

    /// The envelope of this error.
    pub fn body(&self, reference_id: &str) -> Value {
        json!({
            "referenceId": reference_id,
            "status": { "code": self.code.as_str(), "message": self.message },
        })
    }
}

/// The envelope of a successful response.
pub fn success_body(reference_id: &str, data: Value) -> Value {
    json!({
        "referenceId": reference_id,
        "status": { "code": Code::Success.as_str(), "message": "success" },
        "data": data,
    })
}

#[cfg(test)]
mod api_tests {
    use super::*;

    #[test]
    fn codes_serialise_as_the_original_products() {
        assert_eq!(
            serde_json::to_value(Code::InvalidContactCenter).unwrap(),
            json!("INVALID_CONTACT_CENTER")
        );
        for code in [Code::Success, Code::InvalidClientToken, Code::LimitBodySize] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn an_error_has_no_data_and_a_success_has_no_error() {
        let error = ApiError::bad_parameter("text is required").body("r1");
        assert_eq!(error["status"]["code"], "INVALID_PARAMETER");
        assert!(error.get("data").is_none());
        let ok = success_body("r2", json!({"a": 1}));
        assert_eq!(ok["status"]["code"], "SUCCESS");
        assert_eq!(ok["data"]["a"], 1);
    }
}
