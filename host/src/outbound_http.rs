//! The outbound HTTP capability: `wasi:http/outgoing-handler` (from wasmtime-wasi-http), with
//! every request checked against the component's `allowed_outbound_hosts` before it is sent.
//! A refused request fails in the guest with `HTTP-request-denied` and never leaves the host.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::allowed_hosts::{AllowedHosts, OutboundAddress};
use crate::tenant::TenantComponents;

/// Timeouts applied when the guest sets none (wasmtime's own default is ten minutes).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// The capability's per-instance hooks.
pub struct OutboundHttpHooks {
    allowed: Arc<AllowedHosts>,
    component: Arc<str>,
    /// The tenant-components service, for a component granted it (see [`crate::tenant`]).
    tenant_service: Option<Arc<TenantComponents>>,
    /// Where refused addresses are recorded, when the caller wants to know.
    refusals: Option<Arc<Mutex<Vec<String>>>>,
}

impl OutboundHttpHooks {
    pub fn new(allowed: Arc<AllowedHosts>, component: Arc<str>) -> Self {
        Self {
            allowed,
            component,
            tenant_service: None,
            refusals: None,
        }
    }

    /// Serves requests to [`crate::tenant::SERVICE_HOST`] in process, with `service`.
    pub fn with_tenant_service(mut self, service: Arc<TenantComponents>) -> Self {
        self.tenant_service = Some(service);
        self
    }

    /// Records the addresses it refuses (see [`OutboundHttpHooks::refusals`]).
    pub fn recording_refusals(mut self) -> Self {
        self.refusals = Some(Arc::default());
        self
    }

    /// The refused addresses, `scheme://host[:port]`, when recording.
    pub fn refusals(&self) -> Arc<Mutex<Vec<String>>> {
        self.refusals.clone().unwrap_or_default()
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
        if let Some(service) = &self.tenant_service
            && request.uri().host() == Some(crate::tenant::SERVICE_HOST)
        {
            let service = Arc::clone(service);
            return Box::new(async move {
                let response = crate::tenant::service::serve(&service, request).await;
                Ok((
                    response,
                    Box::new(async { Ok(()) })
                        as Box<dyn Future<Output = Result<(), Error>> + Send>,
                ))
            });
        }
        let allowed = self.allows(request.uri());
        if !allowed {
            if let Some(refusals) = &self.refusals {
                let uri = request.uri();
                let address = format!(
                    "{}://{}",
                    uri.scheme_str().unwrap_or("?"),
                    uri.authority().map_or("?", |a| a.as_str())
                );
                refusals
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(address);
            }
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
