//! The host's one TLS client stack, for every connection it makes itself: rustls on ring with
//! Mozilla's roots (webpki-roots), the same stack and roots wasmtime-wasi-http verifies
//! components' outbound HTTPS with. `nexus component push` and PostgreSQL connections use it.

use std::sync::Arc;

use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::{self, RootCertStore};

/// Mozilla's roots, as wasmtime-wasi-http's default outbound HTTPS trusts.
pub fn mozilla_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    }
}

/// ring, named rather than taken from the process default: rustls panics when it has to choose
/// a default and more than one provider is compiled in, as a new dependency could make happen.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A client configuration on [`crypto_provider`] with rustls's safe default protocol versions,
/// ready for its certificate verifier.
pub fn client_config_builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, rustls::Error> {
    rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
}
