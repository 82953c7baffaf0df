//! Sends one outbound request to an address the guard has already vetted.
//!
//! wasmtime-wasi-http's `default_send_request` resolves the URL's host itself when it connects.
//! That second resolution could answer differently from the one the guard checked (DNS
//! rebinding: a public address for the check, 127.0.0.1 for the connection), so nexus connects
//! to the vetted socket addresses instead and keeps the URL's host only for TLS (SNI and
//! certificate verification) and the `Host` header. Otherwise it behaves as the default does:
//! HTTP/1.1, rustls with Mozilla's roots, the request's connect, first-byte and between-bytes
//! timeouts.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls;
use wasmtime_wasi_http::{Error, WasiBody};

/// The timeouts of one request (the guest's, or the host's defaults).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

/// The connection's I/O, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Sends `request` to the first of `targets` that accepts a connection (they are the addresses
/// its host resolved to that the guard let through, in the resolver's order). `server_name` is
/// the URL's host, for TLS when `tls`. Answers the response and the future that drives the rest
/// of the connection (the body), as `WasiHttpHooks::send_request` does.
pub async fn send(
    mut request: http::Request<WasiBody>,
    targets: Vec<SocketAddr>,
    server_name: String,
    tls: bool,
    timeouts: Timeouts,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let tcp = tokio::time::timeout(timeouts.connect, connect_first(&targets))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let io: Box<dyn Io> = if tls {
        let stream = tokio::time::timeout(timeouts.connect, handshake_tls(tcp, &server_name))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request reaches us in absolute form (scheme and authority, for the policy); to a
    // server that is not a proxy it goes in origin form, the host being in `Host`.
    let origin_form = request
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(origin_form)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    // The connection must be polled for the request to go out and the answer to come in, so it
    // runs beside the wait for the answer's head; what is left of it then drives the body.
    let answer = tokio::time::timeout(timeouts.first_byte, sender.send_request(request));
    tokio::pin!(answer);
    let mut connection = Box::pin(connection);
    let mut connection_done = false;
    let response = loop {
        tokio::select! {
            answered = &mut answer => {
                break answered
                    .map_err(|_| Error::ConnectionReadTimeout)?
                    .map_err(Error::from)?;
            }
            closed = &mut connection, if !connection_done => {
                connection_done = true;
                // A clean close leaves the answer (or its failure) to `answer`.
                closed.map_err(Error::from)?;
            }
        }
    };
    let io: IoFuture = Box::new(async move {
        if connection_done {
            return Ok(());
        }
        connection.await.map_err(|err| {
            if err.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(err)
            }
        })
    });
    let response = response.map(|incoming| {
        http_body_util::BodyExt::boxed_unsync(TimedBody::new(incoming, timeouts.between_bytes))
    });
    Ok((response, io))
}

/// A connection to the first target that takes one, or the last target's error.
async fn connect_first(targets: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut last_error = None;
    for target in targets {
        match TcpStream::connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = Some(err),
        }
    }
    Err(Error::Connect(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "no address to connect to",
        )
    })))
}

/// TLS over `tcp`, verifying the certificate for `server_name` (a name or an IP literal) against
/// Mozilla's roots, as wasmtime-wasi-http's own client does.
async fn handshake_tls(
    tcp: TcpStream,
    server_name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    // One configuration for every request (building it parses the roots), on the host's one
    // TLS stack.
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, rustls::Error>> =
        std::sync::OnceLock::new();
    let config = CONFIG
        .get_or_init(|| {
            crate::tls::client_config_builder().map(|builder| {
                Arc::new(
                    builder
                        .with_root_certificates(crate::tls::mozilla_roots())
                        .with_no_client_auth(),
                )
            })
        })
        .clone()
        .map_err(|err| Error::Tls(std::io::Error::other(err)))?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(Error::InvalidDnsNameError)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(Error::Tls)
}

/// The answer's body, failing when no data comes for `between_bytes`.
struct TimedBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    fn new(incoming: hyper::body::Incoming, between_bytes: Duration) -> Self {
        Self {
            incoming,
            between_bytes,
            deadline: Box::pin(tokio::time::sleep(between_bytes)),
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + self.between_bytes;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(if err.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(err)
            }))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
