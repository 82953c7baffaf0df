//! Requests the host makes to itself, through its own listener, so that they are routed,
//! limited, logged and counted like any other: the timed requests of `schedule` and the job runs
//! of `queue`.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::budget::Budget;
use crate::manifest::Manifest;
use crate::variables::AppVariables;

/// The most of an answer's body that is kept (it is for logs and the jobs API).
const MAX_ANSWER_BYTES: usize = 4096;

/// The header that marks a request as the host's own, so that it draws on the host's budget
/// ([`Budget::Host`]) rather than on clients'.
const MARK_HEADER: &str = "nexus-host-request";

/// The mark's value: random per process, so that no client can pass for the host.
static MARK: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
});

/// Whose request this is, by the host's mark; the mark is removed either way, so that a
/// component never sees it.
pub fn take_mark(headers: &mut http::HeaderMap) -> Budget {
    let marked = headers
        .remove(MARK_HEADER)
        .is_some_and(|value| same(value.as_bytes(), MARK.as_bytes()));
    if marked {
        Budget::Host
    } else {
        Budget::Requests
    }
}

/// Byte equality whose time does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the host answered itself.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The body, cut to [`MAX_ANSWER_BYTES`].
    pub body: String,
    /// `Retry-After`, in seconds, when the answer has one.
    pub retry_after: Option<Duration>,
}

/// `POST`s `body` (JSON, when there is one) to `path` on the host at `address`, with the
/// bearer `token` and the request id `request_id`.
pub async fn post(
    address: SocketAddr,
    path: &str,
    token: Option<&str>,
    request_id: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<Answer> {
    send(
        http::Method::POST,
        address,
        path,
        token,
        request_id,
        body,
        true,
    )
    .await
}

/// `GET`s `path` from a host at `address` as any client would (unmarked): `nexus probe`, the
/// container's health check, which runs in a process of its own.
pub async fn get(address: SocketAddr, path: &str, request_id: &str) -> anyhow::Result<Answer> {
    send(
        http::Method::GET,
        address,
        path,
        None,
        request_id,
        None,
        false,
    )
    .await
}

async fn send(
    method: http::Method,
    address: SocketAddr,
    path: &str,
    token: Option<&str>,
    request_id: &str,
    body: Option<Vec<u8>>,
    marked: bool,
) -> anyhow::Result<Answer> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot reach the host at {address}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the host")?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = hyper::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(http::header::HOST, address.to_string())
        .header("x-request-id", request_id);
    if marked {
        request = request.header(MARK_HEADER, MARK.as_str());
    }
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let mut request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    // A job's run: the request continues the job's trace.
    crate::telemetry::pass_on(&tracing::Span::current(), request.headers_mut());
    let response = sender.send_request(request).await;
    let answer = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            let kept = &bytes[..bytes.len().min(MAX_ANSWER_BYTES)];
            Ok(Answer {
                status,
                body: String::from_utf8_lossy(kept).into_owned(),
                retry_after,
            })
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!("{method} {path}"))),
    };
    driver.abort();
    answer
}

/// The application variables, resolved from the environment as the host starts, for the
/// tokens of requests the host makes to itself.
pub fn app_variables(manifest: &Manifest) -> anyhow::Result<AppVariables> {
    Ok(AppVariables::resolve(
        manifest,
        |name| std::env::var(name).ok(),
        &Default::default(),
    )?)
}

/// A bearer token from its template (`"{{ admin_token }}"`); none when it expands to nothing.
pub fn bearer(
    variables: &AppVariables,
    template: Option<&str>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    Ok(template
        .map(|template| variables.expand(template))
        .transpose()
        .with_context(|| format!("{what} bearer"))?
        .filter(|token| !token.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hosts_own_mark_draws_on_its_budget_and_no_component_sees_it() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(take_mark(&mut headers), Budget::Requests);
        headers.insert(MARK_HEADER, "guessed".parse().unwrap());
        assert_eq!(take_mark(&mut headers), Budget::Requests);
        assert!(
            headers.get(MARK_HEADER).is_none(),
            "a forged mark is removed"
        );
        headers.insert(MARK_HEADER, MARK.parse().unwrap());
        assert_eq!(take_mark(&mut headers), Budget::Host);
        assert!(headers.get(MARK_HEADER).is_none(), "the mark is removed");
    }
}
