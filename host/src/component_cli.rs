//! `nexus component ...`: a tenant component's versions, from a terminal or a CI pipeline,
//! through the provisioning API of a running nexus (as `curl` would, with the errors spelled
//! out): push a new version, roll back to the previous one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;

/// The largest body the CLI sends: the host refuses bigger components anyway.
const MAX_COMPONENT_BYTES: usize = nexus_guest::tenant_contract::MAX_COMPONENT_BYTES;
/// How long one call may take, connection and upload included.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the provisioning API is, and who is calling.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// nexus's base URL (`http://` or `https://`).
    #[arg(long, default_value = "http://127.0.0.1:3000", env = "NEXUS_URL")]
    pub url: String,
    /// The platform admin token.
    #[arg(long, env = "NEXUS_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The tenant (its contact-center id).
    #[arg(long, env = "NEXUS_TENANT")]
    pub tenant: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum ComponentCommand {
    /// Upload a component (a `.wasm` file) as the next version of `name`; active at once
    /// unless `--no-activate`. nexus checks it against its world before it accepts it.
    Push {
        #[command(flatten)]
        target: Target,
        /// The component's name in the tenant (a bot names it in `component`).
        #[arg(long)]
        name: String,
        /// What it is.
        #[arg(long, value_parser = ["bot", "transform"])]
        kind: String,
        /// Store the version without making it active.
        #[arg(long)]
        no_activate: bool,
        /// The component, as built by `cargo build --target wasm32-wasip2 --release`.
        file: PathBuf,
    },
    /// Make the version that was active before the current one active again.
    Rollback {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
    },
}

/// Runs `command`; prints the component as nexus describes it after the change.
pub async fn run(command: ComponentCommand) -> anyhow::Result<()> {
    let (target, url, body, content_type) = match command {
        ComponentCommand::Push {
            target,
            name,
            kind,
            no_activate,
            file,
        } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if wasm.len() > MAX_COMPONENT_BYTES {
                bail!(
                    "{} is {} bytes; nexus accepts at most {MAX_COMPONENT_BYTES}",
                    file.display(),
                    wasm.len()
                );
            }
            let mut url = components_url(&target, &name, "versions")?;
            url.query_pairs_mut()
                .append_pair("kind", &kind)
                .append_pair("activate", if no_activate { "false" } else { "true" });
            (target, url, Bytes::from(wasm), Some("application/wasm"))
        }
        ComponentCommand::Rollback { target, name } => {
            let url = components_url(&target, &name, "rollback")?;
            (target, url, Bytes::new(), None)
        }
    };
    let answer = tokio::time::timeout(CALL_TIMEOUT, post(&url, &target.token, body, content_type))
        .await
        .with_context(|| format!("nexus did not answer within {} s", CALL_TIMEOUT.as_secs()))??;
    println!(
        "{}",
        serde_json::to_string_pretty(&answer["data"]).unwrap_or_default()
    );
    Ok(())
}

/// `<url>/nexus/v3/provisioning/tenants/<tenant>/components/<name>/<action>`, each part escaped.
fn components_url(target: &Target, name: &str, action: &str) -> anyhow::Result<url::Url> {
    let mut url =
        url::Url::parse(&target.url).with_context(|| format!("{} is not a URL", target.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("{} is not an http:// or https:// URL", target.url);
    }
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{} cannot be a base URL", target.url))?
        .pop_if_empty()
        .extend([
            "nexus",
            "v3",
            "provisioning",
            "tenants",
            &target.tenant,
            "components",
            name,
            action,
        ]);
    Ok(url)
}

/// POSTs `body` to `url` with the admin token: the API's answer, or its error message.
async fn post(
    url: &url::Url,
    token: &str,
    body: Bytes,
    content_type: Option<&str>,
) -> anyhow::Result<Value> {
    let (status, value) = call(http::Method::POST, url, token, body, content_type).await?;
    if !status.is_success() {
        bail!("nexus answered {status}: {}", api_message(&value));
    }
    Ok(value)
}

/// What an API's error answer says: its `status.message`, or the body itself.
pub fn api_message(answer: &Value) -> String {
    match (answer["status"]["message"].as_str(), answer) {
        (Some(message), _) => message.to_owned(),
        (None, Value::String(text)) => text.clone(),
        (None, other) => other.to_string(),
    }
}

/// One call of a nexus API at `url` with a bearer `token`: the status and the JSON answer (its
/// text as a JSON string when it is not JSON).
pub async fn call(
    method: http::Method,
    url: &url::Url,
    token: &str,
    body: Bytes,
    content_type: Option<&str>,
) -> anyhow::Result<(http::StatusCode, Value)> {
    let host = url.host_str().context("the URL has no host")?.to_owned();
    let port = url.port_or_known_default().context("the URL has no port")?;
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("cannot reach nexus at {host}:{port}"))?;
    // Origin-form, as HTTP/1.1 clients send to a server (the host goes in `Host`).
    let mut request = http::Request::builder()
        .method(method)
        .uri(&url[url::Position::BeforePath..])
        .header(
            http::header::HOST,
            url[url::Position::BeforeHost..url::Position::AfterPort].to_owned(),
        )
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(
            http::header::USER_AGENT,
            concat!("nexus/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(content_type) = content_type {
        request = request.header(http::header::CONTENT_TYPE, content_type);
    }
    let request = request
        .body(Full::new(body))
        .context("cannot build the request")?;
    let (status, answer) = if url.scheme() == "https" {
        // Mozilla's roots (webpki-roots), as wasmtime-wasi-http verifies components' requests.
        let config = crate::tls::client_config_builder()
            .context("cannot set up TLS")?
            .with_root_certificates(crate::tls::mozilla_roots())
            .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .with_context(|| format!("{host} is not a valid TLS server name"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {host} failed"))?;
        exchange(tls, request).await?
    } else {
        exchange(tcp, request).await?
    };
    let value = serde_json::from_slice(&answer)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer).trim().to_owned()));
    Ok((status, value))
}

/// One HTTP/1.1 exchange on `io`: the status and the whole body.
async fn exchange<IO>(
    io: IO,
    request: http::Request<Full<Bytes>>,
) -> anyhow::Result<(http::StatusCode, Bytes)>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("the HTTP handshake failed")?;
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .context("the request failed")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("the answer was cut")?
        .to_bytes();
    connection.abort();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_part_of_the_url() {
        let target = Target {
            url: "https://nexus.example.com/".into(),
            token: String::new(),
            tenant: "acme corp".into(),
        };
        assert_eq!(
            components_url(&target, "faq/../x", "versions")
                .unwrap()
                .as_str(),
            "https://nexus.example.com/nexus/v3/provisioning/tenants/acme%20corp/components/faq%2F..%2Fx/versions"
        );
        let ftp = Target {
            url: "ftp://nexus.example.com".into(),
            ..target
        };
        assert!(components_url(&ftp, "faq", "versions").is_err());
    }
}
