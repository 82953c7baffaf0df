//! Bodies streamed, for what is larger than a component should hold at once. In: a request body
//! read as it arrives (a contact list of a million lines). The Spin SDK's `Request` collects the
//! whole body before the handler runs; a handler that takes the `IncomingRequest` instead gets
//! the request's head as a `Request` with an empty body (`split`), and the body as a
//! `std::io::Read` over the WASI input stream (`blocking-read`), which a CSV reader consumes
//! line by line. Out: a response body written as it is made ([`ResponseWriter`]: a campaign's
//! results as CSV), and the ordinary buffered answer for every other response ([`send`]).

use std::io::Read;

use spin_sdk::http::{IncomingRequest, Request, Response, ResponseOutparam};
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, IncomingBody, OutgoingBody, OutgoingResponse, http_error_code,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

use crate::api::{ApiError, ApiResult, Code};

/// The most bytes asked of the host per read.
const READ_CHUNK: u64 = 64 * 1024;

/// A request's body, read as it arrives.
pub struct BodyReader {
    // Declared before `body`: the stream is a child of the body and is dropped first.
    stream: Option<InputStream>,
    _body: Option<IncomingBody>,
}

/// The error a read gives when the host stopped the body at the component's size limit (the
/// limit, when the host says it).
#[derive(Debug)]
pub struct TooLarge(pub Option<u64>);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(limit) => write!(f, "the body is larger than the {limit} bytes taken here"),
            None => f.write_str("the body is larger than this endpoint takes"),
        }
    }
}

impl std::error::Error for TooLarge {}

/// The request's head (method, URI, headers, with an empty body) and its body as a reader.
pub fn split(incoming: IncomingRequest) -> (Request, BodyReader) {
    let head = Request::builder()
        .method(incoming.method())
        .uri(incoming.uri())
        .headers(incoming.headers())
        .build();
    let body = incoming.consume().ok();
    let stream = body.as_ref().and_then(|body| body.stream().ok());
    (
        head,
        BodyReader {
            stream,
            _body: body,
        },
    )
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(stream) = &self.stream else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let want = READ_CHUNK.min(buf.len() as u64);
        loop {
            match stream.blocking_read(want) {
                Ok(chunk) if chunk.is_empty() => continue,
                Ok(chunk) => {
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    return Ok(chunk.len());
                }
                Err(StreamError::Closed) => return Ok(0),
                Err(StreamError::LastOperationFailed(error)) => {
                    return Err(match http_error_code(&error) {
                        Some(ErrorCode::HttpRequestBodySize(limit)) => {
                            std::io::Error::other(TooLarge(limit))
                        }
                        Some(code) => std::io::Error::other(format!("{code:?}")),
                        None => std::io::Error::other(error.to_debug_string()),
                    });
                }
            }
        }
    }
}

/// Why reading a body failed, as the API answers it: a 413 when the host stopped it at the
/// size limit, a 400 otherwise (the client stopped sending, or sent a broken body).
pub fn failure(err: &std::io::Error) -> ApiError {
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TooLarge>())
    {
        Some(too_large) => ApiError::new(413, Code::LimitBodySize, too_large.to_string()),
        None => ApiError::bad_parameter(format!("the body could not be read: {err}")),
    }
}

impl BodyReader {
    /// The whole body, refused with a 413 when it is longer than `max_bytes`.
    pub fn read_all(&mut self, max_bytes: usize) -> ApiResult<Vec<u8>> {
        let mut body = Vec::new();
        let taken = self
            .take(max_bytes as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|err| failure(&err))?;
        if taken > max_bytes {
            return Err(ApiError::new(
                413,
                Code::LimitBodySize,
                format!("the body is larger than the {max_bytes} bytes this endpoint takes"),
            ));
        }
        Ok(body)
    }
}

/// Writes at most this many bytes per call, as `blocking-write-and-flush` requires.
const WRITE_CHUNK: usize = 4096;

/// Sends `response` whole through `out` (what the SDK's handler macro does for a handler that
/// returns a response).
pub async fn send(out: ResponseOutparam, mut response: Response) {
    let body = std::mem::take(response.body_mut());
    match OutgoingResponse::try_from(response) {
        Ok(outgoing) => {
            if let Err(err) = out.set_with_body(outgoing, body).await {
                eprintln!("cannot send the response: {err}");
            }
        }
        Err(err) => eprintln!("cannot convert the response: {err}"),
    }
}

/// A 200 response whose body is written as it is made. Once it has started, a failure can no
/// longer change the status: dropping the writer unfinished ends the body without its proper
/// end, which the client sees as a broken transfer, never as a complete one.
pub struct ResponseWriter {
    // Declared before `body`: the stream is a child of the body and is dropped first.
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl ResponseWriter {
    /// Starts the response: status 200 and `headers`.
    pub fn start(out: ResponseOutparam, headers: &[(&str, &str)]) -> ApiResult<ResponseWriter> {
        let entries: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec()))
            .collect();
        let fields = Fields::from_list(&entries)
            .map_err(|err| ApiError::internal("the response's headers", format!("{err:?}")))?;
        let response = OutgoingResponse::new(fields);
        let body = response
            .body()
            .map_err(|()| ApiError::internal("the response's body", "taken"))?;
        let stream = body
            .write()
            .map_err(|()| ApiError::internal("the response's body", "no stream"))?;
        spin_sdk::wit::wasi::http0_2_0::types::ResponseOutparam::set(
            out.into_inner(),
            Ok(response),
        );
        Ok(ResponseWriter {
            stream: Some(stream),
            body: Some(body),
        })
    }

    /// Writes `bytes`; an error when the client has gone.
    pub fn write(&mut self, bytes: &[u8]) -> ApiResult<()> {
        let Some(stream) = &self.stream else {
            return Err(ApiError::internal("write the response", "finished"));
        };
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|err| ApiError::internal("write the response", format!("{err:?}")))?;
        }
        Ok(())
    }

    /// Ends the body properly: the client has it all.
    pub fn finish(mut self) -> ApiResult<()> {
        drop(self.stream.take());
        match self.body.take() {
            Some(body) => OutgoingBody::finish(body, None)
                .map_err(|err| ApiError::internal("finish the response", format!("{err:?}"))),
            None => Ok(()),
        }
    }
}
