//! nexus's own components (and any Spin HTTP component): an HTTP request in, its response out,
//! with every Spin and nexus import bound to the fakes.

use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::runtime::{CallError, Limits, State, call_error, call_runtime, keep_output, runtime};
use crate::{Fakes, build_component};

/// A response of the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order given.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of the header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// An HTTP component (it exports `wasi:http/incoming-handler`), mounted at a route.
#[derive(Clone)]
pub struct HttpComponent {
    pre: ProxyPre<State>,
    route: String,
    limits: Limits,
}

impl HttpComponent {
    /// Loads the component at `path`, mounted at `/` (see [`HttpComponent::mounted_at`]).
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<HttpComponent> {
        let runtime = runtime()?;
        let component = runtime.component(path.as_ref())?;
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component imports something neither WASI nor the fakes provide")?;
        let pre = ProxyPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component does not export wasi:http/incoming-handler")?;
        Ok(HttpComponent {
            pre,
            route: String::new(),
            limits: Limits {
                // nexus's components run under the host's request limits, not a tenant's.
                cpu_time: std::time::Duration::from_secs(10),
                memory_bytes: 128 << 20,
                timeout: std::time::Duration::from_secs(30),
            },
        })
    }

    /// Builds the crate at `manifest_dir` for wasm32-wasip2 and loads it.
    pub fn build(manifest_dir: impl AsRef<Path>) -> anyhow::Result<HttpComponent> {
        HttpComponent::load(build_component(manifest_dir)?)
    }

    /// The same component, mounted at `route` as in spin.toml (`/example/...` is given as
    /// `"/example"`): the part of a path below it is the `spin-path-info` the component sees.
    pub fn mounted_at(mut self, route: &str) -> HttpComponent {
        self.route = route
            .trim_end_matches("/...")
            .trim_end_matches('/')
            .to_owned();
        self
    }

    /// The same component, called under `limits`.
    pub fn with_limits(mut self, limits: Limits) -> HttpComponent {
        self.limits = limits;
        self
    }

    /// `GET path` (with its query).
    pub fn get(&self, fakes: &Fakes, path: &str) -> Result<Response, CallError> {
        self.send(fakes, request("GET", path, Bytes::new())?)
    }

    /// Sends `request` (its URI a path, or a whole URL) and waits for the whole response.
    pub fn send(
        &self,
        fakes: &Fakes,
        request: http::Request<Bytes>,
    ) -> Result<Response, CallError> {
        call_runtime()?.block_on(self.send_async(fakes, request))
    }

    /// [`HttpComponent::send`], from an async test.
    pub async fn send_async(
        &self,
        fakes: &Fakes,
        request: http::Request<Bytes>,
    ) -> Result<Response, CallError> {
        let runtime = call_runtime()?;
        let request = self.with_spin_headers(request)?;
        let (mut store, stdout, stderr) = runtime.store(fakes, &self.limits);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = request.map(|body| {
            Full::new(body).map_err(
                |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
            )
        });
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|req| Ok((req, store.data_mut().http().new_response_outparam(sender)?)));
        let (req, out) = prepared.map_err(|err| CallError::Setup(format!("{err:#}")))?;
        let pre = self.pre.clone();
        // The guest may go on writing its body after it answered: it runs on a task of its own
        // while the response is read.
        let guest = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        let response = tokio::time::timeout(self.limits.timeout, async {
            let answer = receiver.await;
            let response = match answer {
                Ok(Ok(response)) => response,
                Ok(Err(code)) => {
                    return Err(CallError::Trap(format!(
                        "the component answered with the error {code:?}"
                    )));
                }
                Err(_) => {
                    return Err(CallError::Trap(
                        "the component ended without a response".into(),
                    ));
                }
            };
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|err| CallError::Trap(format!("the response body failed: {err:?}")))?
                .to_bytes();
            Ok(Response {
                status: parts.status.as_u16(),
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
                body: body.to_vec(),
            })
        })
        .await;
        let abort = guest.abort_handle();
        let ended = tokio::time::timeout(self.limits.timeout, guest).await;
        abort.abort();
        keep_output(fakes, &stdout, &stderr);
        let output = [stdout.contents(), stderr.contents()].concat();
        // The guest's own failure first: a trap before the response also leaves no response.
        match ended {
            Ok(Ok(Err(err))) => return Err(call_error(&err, &output)),
            Ok(Err(join)) => return Err(CallError::Trap(format!("the call panicked: {join}"))),
            Err(_) => return Err(CallError::Timeout),
            Ok(Ok(Ok(()))) => {}
        }
        response.unwrap_or(Err(CallError::Timeout))
    }

    /// The request as the host gives it: an absolute URI, and Spin's route headers (after
    /// removing any the test set, as the host removes a client's).
    fn with_spin_headers(
        &self,
        mut request: http::Request<Bytes>,
    ) -> Result<http::Request<Bytes>, CallError> {
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
        let uri: http::Uri = format!("http://localhost{path_and_query}")
            .parse()
            .map_err(|err| CallError::Setup(format!("bad request URI: {err}")))?;
        let path = uri.path().to_owned();
        *request.uri_mut() = uri;
        let path_info = match path.strip_prefix(&self.route) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
            _ => {
                return Err(CallError::Setup(format!(
                    "{path} is not under the component's route {}",
                    self.route
                )));
            }
        };
        let headers = request.headers_mut();
        let spoofed: Vec<http::HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("spin-"))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
        let route = format!("{}/...", self.route);
        for (name, value) in [
            ("spin-full-url", format!("http://localhost{path_and_query}")),
            ("spin-path-info", path_info),
            ("spin-matched-route", route.clone()),
            ("spin-raw-component-route", route.clone()),
            ("spin-component-route", self.route.clone()),
            ("spin-base-path", "/".to_owned()),
            ("spin-client-addr", "127.0.0.1:0".to_owned()),
        ] {
            let value = http::HeaderValue::from_str(&value)
                .map_err(|err| CallError::Setup(format!("bad header {name}: {err}")))?;
            headers.insert(name, value);
        }
        if !headers.contains_key(http::header::HOST) {
            headers.insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        Ok(request)
    }
}

/// A request with `method`, `path` and `body`.
pub fn request(method: &str, path: &str, body: Bytes) -> Result<http::Request<Bytes>, CallError> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .body(body)
        .map_err(|err| CallError::Setup(format!("bad request: {err}")))
}
