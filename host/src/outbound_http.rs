//! The outbound HTTP capability: `wasi:http/outgoing-handler` (from wasmtime-wasi-http), with
//! every request checked against the component's `allowed_outbound_hosts` before it is sent.
//! A refused request fails in the guest with `HTTP-request-denied` and never leaves the host.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::allowed_hosts::{AllowedHosts, OutboundAddress};

/// Timeouts applied when the guest sets none (wasmtime's own default is ten minutes).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// The capability's per-instance hooks.
pub struct OutboundHttpHooks {
    allowed: Arc<AllowedHosts>,
    component: Arc<str>,
}

impl OutboundHttpHooks {
    pub fn new(allowed: Arc<AllowedHosts>, component: Arc<str>) -> Self {
        Self { allowed, component }
    }

    /// Whether the request's target is allowed.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let address = OutboundAddress {
            scheme: scheme.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16(),
        };
        self.allowed.allows(&address)
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for OutboundHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let allowed = self.allows(request.uri());
        if !allowed {
            tracing::warn!(
                component = &*self.component,
                uri = %request.uri(),
                "outbound HTTP refused: not in allowed_outbound_hosts"
            );
        }
        let options = RequestOptions {
            connect_timeout: options
                .and_then(|o| o.connect_timeout)
                .or(Some(DEFAULT_CONNECT_TIMEOUT)),
            first_byte_timeout: options
                .and_then(|o| o.first_byte_timeout)
                .or(Some(DEFAULT_FIRST_BYTE_TIMEOUT)),
            between_bytes_timeout: options
                .and_then(|o| o.between_bytes_timeout)
                .or(Some(DEFAULT_BETWEEN_BYTES_TIMEOUT)),
        };
        Box::new(async move {
            if !allowed {
                return Err(Error::HttpRequestDenied);
            }
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_scheme_host_and_port() {
        let allowed = Arc::new(
            AllowedHosts::parse(&["http://127.0.0.1:*", "https://api.example.com"]).unwrap(),
        );
        let hooks = OutboundHttpHooks::new(allowed, "c".into());
        let allows = |uri: &str| hooks.allows(&uri.parse().unwrap());
        assert!(allows("http://127.0.0.1:8080/x"));
        assert!(!allows("http://localhost:8080/x"));
        assert!(allows("https://api.example.com/v1"));
        assert!(!allows("http://api.example.com/v1"));
        assert!(!allows("/relative"));
    }
}
