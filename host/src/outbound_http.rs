//! The outbound HTTP capability: `wasi:http/outgoing-handler` (from wasmtime-wasi-http), with
//! every request checked against the component's `allowed_outbound_hosts` before it is sent.
//! A refused request fails in the guest with `HTTP-request-denied` and never leaves the host.
//!
//! A request that passes is then checked where it would land: its host is resolved (an IP
//! literal is taken as it is), and a request whose addresses are all non-public (loopback,
//! private, link-local with the cloud metadata service, CGNAT, ...: `nexus_guest::private_address`)
//! is refused the same way, unless the component may reach them (see [`PrivateDestinations`]).
//! The request then goes to one of the vetted addresses itself ([`send`]), never to a second
//! resolution of the name, which could answer otherwise.

mod send;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_guest::private_address::{self, NonPublic};
use tracing::Instrument;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::allowed_hosts::{AllowedHosts, OutboundAddress};
use crate::tenant::TenantComponents;

/// Timeouts applied when the guest sets none (wasmtime's own default is ten minutes).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// Which non-public destinations a component may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateDestinations {
    /// Those its `allowed_outbound_hosts` grant explicitly: by host name, by address or by
    /// network, never through `*` or `*.domain` (see [`AllowedHosts::grants_explicitly`]). For
    /// the manifest's components, whose grants the operator wrote: so `http://*:*`, which the
    /// components delivering to tenants' URLs hold, reaches only public addresses.
    Granted,
    /// None, whatever its grants say: for tenant components, whose grants are the tenant's own.
    Refused,
    /// All of them: the operator set the application variable `allow_private_outbound`.
    Allowed,
}

impl PrivateDestinations {
    /// The policy for the manifest's components, given the operator's `allow_private_outbound`.
    pub fn for_manifest(allow_private_outbound: bool) -> Self {
        if allow_private_outbound {
            PrivateDestinations::Allowed
        } else {
            PrivateDestinations::Granted
        }
    }

    /// The policy for tenant components, given the operator's `allow_private_outbound`.
    pub fn for_tenants(allow_private_outbound: bool) -> Self {
        if allow_private_outbound {
            PrivateDestinations::Allowed
        } else {
            PrivateDestinations::Refused
        }
    }
}

/// The capability's per-instance hooks.
pub struct OutboundHttpHooks {
    allowed: Arc<AllowedHosts>,
    component: Arc<str>,
    /// Which non-public addresses it may reach.
    private: PrivateDestinations,
    /// The tenant-components service, for a component granted it (see [`crate::tenant`]).
    tenant_service: Option<Arc<TenantComponents>>,
    /// Where refused addresses are recorded, when the caller wants to know.
    refusals: Option<Arc<Mutex<Vec<String>>>>,
}

impl OutboundHttpHooks {
    /// Hooks for a component that reaches non-public addresses only where its grants name them
    /// ([`PrivateDestinations::Granted`]).
    pub fn new(allowed: Arc<AllowedHosts>, component: Arc<str>) -> Self {
        Self {
            allowed,
            component,
            private: PrivateDestinations::Granted,
            tenant_service: None,
            refusals: None,
        }
    }

    /// Which non-public addresses the component may reach.
    pub fn with_private_destinations(mut self, private: PrivateDestinations) -> Self {
        self.private = private;
        self
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
        outbound_address(uri).is_some_and(|address| self.allowed.allows(&address))
    }
}

/// What the policy looks at of a request's URI.
fn outbound_address(uri: &http::Uri) -> Option<OutboundAddress> {
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return None;
    };
    Some(OutboundAddress {
        scheme: scheme.to_owned(),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: uri.port_u16(),
    })
}

/// `scheme://host[:port]` of a refused request, for the tenant module's failure reasons.
fn refused_address(uri: &http::Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map_or("?", |a| a.as_str())
    )
}

fn record(refusals: Option<&Arc<Mutex<Vec<String>>>>, uri: &http::Uri) {
    if let Some(refusals) = refusals {
        refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(refused_address(uri));
    }
}

/// The addresses of `resolved` that a component with `allowed` and `private` may connect to,
/// in the resolver's order: the public ones, and the non-public ones its policy lets through.
/// When there is none, every address with what kind of non-public address it is.
fn vet(
    allowed: &AllowedHosts,
    private: PrivateDestinations,
    address: &OutboundAddress,
    resolved: &[SocketAddr],
) -> Result<Vec<SocketAddr>, Vec<(SocketAddr, NonPublic)>> {
    let mut refused = Vec::new();
    let mut usable = Vec::new();
    for target in resolved {
        match private_address::classify(target.ip()) {
            None => usable.push(*target),
            Some(kind) => {
                let granted = match private {
                    PrivateDestinations::Allowed => true,
                    PrivateDestinations::Refused => false,
                    PrivateDestinations::Granted => allowed.grants_explicitly(address, target.ip()),
                };
                if granted {
                    usable.push(*target);
                } else {
                    refused.push((*target, kind));
                }
            }
        }
    }
    if usable.is_empty() {
        Err(refused)
    } else {
        Ok(usable)
    }
}

/// The socket addresses `host` (a name, or an IP literal taken as it is) resolves to.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(Error::Connect)?
        .collect();
    if resolved.is_empty() {
        return Err(Error::Connect(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "the name resolved to no address",
        )));
    }
    Ok(resolved)
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
        mut request: http::Request<WasiBody>,
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
        // The far side continues the trace from this request's own span.
        let span = crate::telemetry::outbound_span(&self.component, &request);
        crate::telemetry::pass_on(&span, request.headers_mut());
        let address = outbound_address(request.uri());
        let allowed = address
            .as_ref()
            .is_some_and(|address| self.allowed.allows(address));
        if !allowed {
            record(self.refusals.as_ref(), request.uri());
            tracing::warn!(
                component = &*self.component,
                uri = %request.uri(),
                "outbound HTTP refused: not in allowed_outbound_hosts"
            );
        }
        let timeouts = send::Timeouts {
            connect: options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            first_byte: options
                .and_then(|o| o.first_byte_timeout)
                .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT),
            between_bytes: options
                .and_then(|o| o.between_bytes_timeout)
                .unwrap_or(DEFAULT_BETWEEN_BYTES_TIMEOUT),
        };
        let policy = Arc::clone(&self.allowed);
        let private = self.private;
        let component = Arc::clone(&self.component);
        let refusals = self.refusals.clone();
        let sending = async move {
            let Some(address) = address.filter(|_| allowed) else {
                return Err(Error::HttpRequestDenied);
            };
            let tls = address.scheme.eq_ignore_ascii_case("https");
            let port = address.port.unwrap_or(if tls { 443 } else { 80 });
            // The resolver gets the connect timeout too: a name that never resolves must not
            // hold the request longer than an address that never answers.
            let resolved = tokio::time::timeout(timeouts.connect, resolve(&address.host, port))
                .await
                .map_err(|_| Error::DnsTimeout)??;
            let targets = match vet(&policy, private, &address, &resolved) {
                Ok(targets) => targets,
                Err(refused) => {
                    record(refusals.as_ref(), request.uri());
                    let resolved: Vec<String> = refused
                        .iter()
                        .map(|(target, kind)| format!("{} ({})", target.ip(), kind.describe()))
                        .collect();
                    tracing::warn!(
                        component = &*component,
                        uri = %request.uri(),
                        resolved = resolved.join(", "),
                        policy = ?private,
                        "outbound HTTP refused: the host resolves only to non-public addresses \
                         (loopback, private, link-local, ...) that this component may not reach"
                    );
                    return Err(Error::HttpRequestDenied);
                }
            };
            let (response, io) = send::send(request, targets, address.host, tls, timeouts).await?;
            Ok((response, io))
        };
        Box::new(async move {
            let sent = sending.instrument(span.clone()).await;
            match &sent {
                Ok((response, _)) => {
                    let status = response.status().as_u16();
                    crate::telemetry::set(&span, "http.response.status_code", i64::from(status));
                    if status >= 400 {
                        crate::telemetry::failed(&span, status.to_string());
                    }
                }
                Err(err) => crate::telemetry::failed(&span, err.to_string()),
            }
            sent
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

    fn addresses(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), 80))
            .collect()
    }

    fn vetted(
        entries: &[&str],
        private: PrivateDestinations,
        url: &str,
        resolved: &[&str],
    ) -> Result<Vec<String>, Vec<String>> {
        let allowed = AllowedHosts::parse(entries).unwrap();
        let address = OutboundAddress::parse(url).unwrap();
        vet(&allowed, private, &address, &addresses(resolved))
            .map(|ok| ok.iter().map(|a| a.ip().to_string()).collect())
            .map_err(|refused| refused.iter().map(|(a, _)| a.ip().to_string()).collect())
    }

    #[test]
    fn wildcards_reach_public_addresses_only() {
        let wildcard = ["http://*:*", "https://*:*"];
        let granted = PrivateDestinations::Granted;
        for private in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(
                vetted(&wildcard, granted, "http://hooks.example.com", &[private]),
                Err(vec![private.to_owned()]),
                "{private}"
            );
        }
        assert_eq!(
            vetted(
                &wildcard,
                granted,
                "https://hooks.example.com",
                &["8.8.8.8"]
            ),
            Ok(vec!["8.8.8.8".to_owned()])
        );
        // A name with public and private addresses: only the public ones are tried, in order.
        assert_eq!(
            vetted(
                &wildcard,
                granted,
                "http://mixed.example.com",
                &["127.0.0.1", "1.1.1.1", "10.0.0.1", "2606:4700::1111"]
            ),
            Ok(vec!["1.1.1.1".to_owned(), "2606:4700::1111".to_owned()])
        );
    }

    #[test]
    fn explicit_grants_reach_the_private_addresses_they_name() {
        let granted = PrivateDestinations::Granted;
        assert_eq!(
            vetted(
                &["http://127.0.0.1:*"],
                granted,
                "http://127.0.0.1:80",
                &["127.0.0.1"]
            ),
            Ok(vec!["127.0.0.1".to_owned()])
        );
        assert_eq!(
            vetted(
                &["http://*:*", "http://10.0.0.0/8:*"],
                granted,
                "http://internal.example",
                &["10.9.8.7", "192.168.0.1"]
            ),
            Ok(vec!["10.9.8.7".to_owned()])
        );
        assert_eq!(
            vetted(
                &["https://hooks.internal.example"],
                granted,
                "https://hooks.internal.example",
                &["10.1.1.1"]
            ),
            Ok(vec!["10.1.1.1".to_owned()])
        );
        // A grant of 127.0.0.1 is not a grant of every name that resolves there.
        assert_eq!(
            vetted(
                &["http://*:*", "http://127.0.0.1:*"],
                granted,
                "http://localhost:80",
                &["127.0.0.1"]
            ),
            Ok(vec!["127.0.0.1".to_owned()]),
            "the address itself is named, so it is granted"
        );
        assert_eq!(
            vetted(
                &["http://*:*", "http://127.0.0.1:*"],
                granted,
                "http://localhost:80",
                &["::1"]
            ),
            Err(vec!["::1".to_owned()])
        );
    }

    #[test]
    fn the_policy_decides_for_tenants_and_the_operator_switch() {
        let grant = ["http://127.0.0.1:*"];
        // A tenant component's grants are the tenant's: they open no private address.
        assert_eq!(
            vetted(
                &grant,
                PrivateDestinations::for_tenants(false),
                "http://127.0.0.1:80",
                &["127.0.0.1"]
            ),
            Err(vec!["127.0.0.1".to_owned()])
        );
        assert_eq!(
            vetted(
                &grant,
                PrivateDestinations::for_tenants(true),
                "http://127.0.0.1:80",
                &["127.0.0.1"]
            ),
            Ok(vec!["127.0.0.1".to_owned()])
        );
        // The operator's switch opens them to wildcards too.
        assert_eq!(
            vetted(
                &["http://*:*"],
                PrivateDestinations::for_manifest(true),
                "http://localhost:80",
                &["127.0.0.1", "::1"]
            ),
            Ok(vec!["127.0.0.1".to_owned(), "::1".to_owned()])
        );
        assert_eq!(
            PrivateDestinations::for_manifest(false),
            PrivateDestinations::Granted
        );
    }

    /// A one-shot HTTP server on 127.0.0.1 that answers `ok` and counts its connections.
    async fn local_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        (port, connections)
    }

    async fn get(hooks: &mut OutboundHttpHooks, url: &str) -> Result<Vec<u8>, Error> {
        use http_body_util::{BodyExt, Empty};
        let body = Empty::<bytes::Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = http::Request::get(url).body(body).unwrap();
        let sending = hooks.send_request(request, None, Box::new(async { Ok(()) }));
        let (response, io) = Box::into_pin(sending).await?;
        tokio::spawn(Box::into_pin(io));
        Ok(response.into_body().collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn sends_to_the_vetted_address_and_refuses_the_rest() {
        let (port, connections) = local_server().await;
        let hooks = |entries: &[&str]| {
            OutboundHttpHooks::new(
                Arc::new(AllowedHosts::parse(entries).unwrap()),
                "test".into(),
            )
        };
        let mut wildcard = hooks(&["http://*:*"]);
        for url in [
            format!("http://127.0.0.1:{port}/x"),
            format!("http://localhost:{port}/x"),
            format!("http://[::ffff:127.0.0.1]:{port}/x"),
        ] {
            let refused = get(&mut wildcard, &url).await;
            assert!(
                matches!(refused, Err(Error::HttpRequestDenied)),
                "{url}: {refused:?}"
            );
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);

        let mut granted = hooks(&["http://127.0.0.1:*"]);
        let body = get(&mut granted, &format!("http://127.0.0.1:{port}/x?y=1"))
            .await
            .unwrap();
        assert_eq!(body, b"ok");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);

        let mut tenant = hooks(&["http://127.0.0.1:*"])
            .with_private_destinations(PrivateDestinations::for_tenants(false))
            .recording_refusals();
        let refused = get(&mut tenant, &format!("http://127.0.0.1:{port}/x")).await;
        assert!(matches!(refused, Err(Error::HttpRequestDenied)));
        assert_eq!(
            *tenant.refusals().lock().unwrap(),
            vec![format!("http://127.0.0.1:{port}")]
        );
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
