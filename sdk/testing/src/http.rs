//! The outbound HTTP fake: `wasi:http/outgoing-handler` answered from a script, every request
//! recorded (method, URL, headers, body) for the test to assert on.
//!
//! A request is answered by the first matching one-shot reply (in the order they were
//! scripted), else by the last matching standing reply; one that matches nothing fails in the
//! guest as `destination-not-found`, as a host that does not exist would, and is still recorded.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::lock;

/// A scripted answer to an outbound request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A response.
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// The request fails in the guest, as an unreachable host's would.
    ConnectionRefused,
    /// The request fails in the guest as timed out.
    Timeout,
}

impl Reply {
    /// A response with no body.
    pub fn status(status: u16) -> Self {
        Reply::Response {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: &str) -> Self {
        Reply::status(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.to_owned())
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Reply::status(status)
            .with_header("content-type", "application/json")
            .with_body(body.to_string())
    }

    /// The same, with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Response { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// The same, with `body`.
    pub fn with_body(mut self, new_body: impl Into<Bytes>) -> Self {
        if let Reply::Response { body, .. } = &mut self {
            *body = new_body.into();
        }
        self
    }
}

/// One request the component sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub method: String,
    pub url: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether a script answered it (`false`: it failed as `destination-not-found`).
    pub answered: bool,
}

impl HttpCall {
    /// The first value of the header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` if it is not).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

struct Route {
    method: Option<String>,
    url_prefix: String,
    reply: Reply,
}

impl Route {
    fn matches(&self, method: &str, url: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|expected| expected.eq_ignore_ascii_case(method))
            && url.starts_with(&self.url_prefix)
    }
}

#[derive(Default)]
struct Script {
    once: VecDeque<Route>,
    standing: Vec<Route>,
    calls: Vec<HttpCall>,
}

/// The outbound HTTP fake. Clones share one script and one record.
#[derive(Clone, Default)]
pub struct FakeHttp {
    script: Arc<Mutex<Script>>,
}

/// `method` as scripted: `"*"` (or `""`) is any method.
fn method_filter(method: &str) -> Option<String> {
    (!method.is_empty() && method != "*").then(|| method.to_ascii_uppercase())
}

impl FakeHttp {
    /// Answers every `method` request (`"*"`: any) whose URL starts with `url_prefix` with
    /// `reply`, from now on (a later standing reply for the same requests takes over).
    pub fn respond(&self, method: &str, url_prefix: &str, reply: Reply) -> &Self {
        lock(&self.script).standing.push(Route {
            method: method_filter(method),
            url_prefix: url_prefix.to_owned(),
            reply,
        });
        self
    }

    /// Answers the next matching request with `reply`, once (before any standing reply).
    pub fn respond_once(&self, method: &str, url_prefix: &str, reply: Reply) -> &Self {
        lock(&self.script).once.push_back(Route {
            method: method_filter(method),
            url_prefix: url_prefix.to_owned(),
            reply,
        });
        self
    }

    /// Every request sent so far, oldest first.
    pub fn calls(&self) -> Vec<HttpCall> {
        lock(&self.script).calls.clone()
    }

    /// Forgets the requests recorded so far (the script stays).
    pub fn clear_calls(&self) {
        lock(&self.script).calls.clear();
    }

    fn answer(&self, method: &str, url: &str) -> Option<Reply> {
        let mut script = lock(&self.script);
        if let Some(index) = script
            .once
            .iter()
            .position(|route| route.matches(method, url))
        {
            return script.once.remove(index).map(|route| route.reply);
        }
        script
            .standing
            .iter()
            .rev()
            .find(|route| route.matches(method, url))
            .map(|route| route.reply.clone())
    }

    fn record(&self, call: HttpCall) {
        lock(&self.script).calls.push(call);
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for FakeHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let fake = self.clone();
        Box::new(async move {
            let (parts, body) = request.into_parts();
            // The whole body, as a real server would read it (a guest streams it).
            let body = body.collect().await?.to_bytes();
            let method = parts.method.as_str().to_owned();
            let url = parts.uri.to_string();
            let reply = fake.answer(&method, &url);
            fake.record(HttpCall {
                headers: parts
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_owned(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                method,
                url,
                body: body.to_vec(),
                answered: reply.is_some(),
            });
            let (status, headers, body) = match reply {
                Some(Reply::Response {
                    status,
                    headers,
                    body,
                }) => (status, headers, body),
                Some(Reply::ConnectionRefused) => return Err(Error::ConnectionRefused),
                Some(Reply::Timeout) => return Err(Error::ConnectionReadTimeout),
                None => return Err(Error::DestinationNotFound),
            };
            let mut response = http::Response::builder().status(status);
            for (name, value) in &headers {
                response = response.header(name, value);
            }
            let response = response
                .body(
                    Full::new(body)
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .map_err(|_| Error::HttpResponseIncomplete)?;
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}
