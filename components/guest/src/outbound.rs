//! Outbound HTTP with a deadline. The Spin SDK's `send` sets no request options, so a far side
//! that never answers holds the call until the host's own limit; a bot turn must instead give
//! up after the bot's response timeout and hand the conversation to routing. This calls
//! `wasi:http/outgoing-handler` directly with `request-options` (connect, first byte and
//! between bytes), which the nexus host and Spin both honour.

use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};

/// What the far side answered.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why there is no answer.
#[derive(Debug)]
pub enum Failure {
    /// The deadline passed (connecting, or waiting for the answer).
    TimedOut,
    /// The request could not be made or the connection failed.
    Failed(String),
    /// The answer was larger than the caller takes.
    TooLarge,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("no answer within the deadline"),
            Failure::Failed(why) => write!(f, "the request failed: {why}"),
            Failure::TooLarge => f.write_str("the answer is too large"),
        }
    }
}

/// Writes at most this many bytes per call, as `blocking-write-and-flush` requires.
const WRITE_CHUNK: usize = 4096;

fn failed(what: &str) -> Failure {
    Failure::Failed(what.to_owned())
}

fn from_error_code(code: &ErrorCode) -> Failure {
    match code {
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => Failure::TimedOut,
        other => Failure::Failed(format!("{other:?}")),
    }
}

/// Splits an absolute http(s) URL into its scheme, authority and path with query.
fn parts(url: &str) -> Option<(Scheme, &str, &str)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return None;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return None;
    }
    Some((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// POSTs `body` to `url` with `headers`, waiting at most `timeout_ms` to connect and for the
/// answer to start, and between its chunks; takes at most `max_answer_bytes` of answer.
pub fn post(
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout_ms: u64,
    max_answer_bytes: usize,
) -> Result<Answer, Failure> {
    let (scheme, authority, path) = parts(url).ok_or_else(|| failed("not an http(s) URL"))?;
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
        .collect();
    entries.push(("content-length".into(), body.len().to_string().into_bytes()));
    let fields = Fields::from_list(&entries).map_err(|err| Failure::Failed(format!("{err:?}")))?;
    let request = OutgoingRequest::new(fields);
    request
        .set_method(&Method::Post)
        .and_then(|()| request.set_scheme(Some(&scheme)))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some(path)))
        .map_err(|()| failed("the URL is not acceptable"))?;
    let options = RequestOptions::new();
    let nanos = timeout_ms.saturating_mul(1_000_000);
    // A host that does not support a timeout says so; the host's own limits still apply.
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let outgoing = request.body().map_err(|()| failed("no request body"))?;
    let future =
        outgoing_handler::handle(request, Some(options)).map_err(|code| from_error_code(&code))?;
    {
        let stream = outgoing.write().map_err(|()| failed("no body stream"))?;
        for chunk in body.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|err| Failure::Failed(format!("writing the body: {err:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|code| from_error_code(&code))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(from_error_code(&code)),
        Some(Err(())) | None => return Err(failed("no response")),
    };
    read(response, max_answer_bytes)
}

fn read(response: IncomingResponse, max_answer_bytes: usize) -> Result<Answer, Failure> {
    let status = response.status();
    let incoming = response.consume().map_err(|()| failed("no answer body"))?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| failed("no answer stream"))?;
        loop {
            match stream.blocking_read(WRITE_CHUNK as u64) {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > max_answer_bytes {
                        return Err(Failure::TooLarge);
                    }
                }
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(err) => {
                    return Err(match err {
                        wasi::io::streams::StreamError::LastOperationFailed(e) => {
                            match spin_sdk::wit::wasi::http0_2_0::types::http_error_code(&e) {
                                Some(code) => from_error_code(&code),
                                None => Failure::Failed(e.to_debug_string()),
                            }
                        }
                        wasi::io::streams::StreamError::Closed => failed("closed"),
                    });
                }
            }
        }
    }
    Ok(Answer { status, body })
}
