//! Outbound HTTP from a tenant component, to the hosts the tenant granted it (any other is
//! refused by nexus before a connection is made, as `Err`). Blocking and simple: what a bot
//! needs to ask a knowledge base or a CRM. Bodies are read up to [`MAX_BODY_BYTES`].

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// The most of a response body that is read.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, String> {
    send("GET", url, &[], None)
}

/// `POST url` with a JSON body.
pub fn post_json(url: &str, json: &[u8]) -> Result<Response, String> {
    send(
        "POST",
        url,
        &[("content-type", "application/json")],
        Some(json),
    )
}

/// Sends a request and reads its answer.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an http(s) URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|err| format!("the header {name}: {err:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_owned()),
    };
    let refused = |what: &str| format!("the request's {what} is refused");
    request
        .set_method(&method)
        .map_err(|()| refused("method"))?;
    request
        .set_scheme(Some(&match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_owned()),
        }))
        .map_err(|()| refused("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| refused("host"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| refused("path"))?;
    let outgoing = request.body().map_err(|()| refused("body"))?;
    if let Some(body) = body {
        let stream = outgoing.write().map_err(|()| refused("body"))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|err| format!("cannot send the body: {err:?}"))?;
        }
    }
    let future = outgoing_handler::handle(request, None).map_err(describe)?;
    OutgoingBody::finish(outgoing, None).map_err(describe)?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or_else(|| "no answer".to_owned())?
        .map_err(|()| "the answer was already taken".to_owned())?
        .map_err(describe)?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| "no body".to_owned())?;
    let stream = incoming.stream().map_err(|()| "no body".to_owned())?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(bytes) => {
                body.extend_from_slice(&bytes);
                if body.len() > MAX_BODY_BYTES {
                    return Err(format!("the answer is over {MAX_BODY_BYTES} bytes"));
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(err)) => {
                return Err(format!("cannot read the answer: {}", err.to_debug_string()));
            }
        }
    }
    drop(stream);
    let _ = IncomingBody::finish(incoming);
    Ok(Response { status, body })
}

fn describe(code: ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => {
            "nexus refused the request: the component is not granted that host".to_owned()
        }
        ErrorCode::ConnectionRefused => "the connection was refused".to_owned(),
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => {
            "the host did not answer in time".to_owned()
        }
        other => format!("{other:?}"),
    }
}
