//! TLS to PostgreSQL, with `sslmode` and `sslrootcert` as libpq documents them.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | if the server takes it, else plain | not verified (unless `sslrootcert` names a file: then as `verify-ca`) |
//! | `require` | always | not verified (unless `sslrootcert` names a file: then as `verify-ca`) |
//! | `verify-ca` | always | its chain must end in a trusted root; its name is not checked |
//! | `verify-full` | always | its chain, and that it names the host of the address |
//!
//! The trusted roots are the PEM file `sslrootcert` names, or else the host's own (Mozilla's,
//! [`crate::tls::mozilla_roots`]); `sslrootcert=system` asks for the latter explicitly and, as
//! in libpq, then defaults to and requires `verify-full`. libpq would look for
//! `~/.postgresql/root.crt` instead; a server process has no business in a home directory.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and refuses parameters it does
//! not know, so both are taken out of the address here before it reads the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::{
    WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::{self, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            // libpq's `allow` tries plain first and TLS second; nexus has no use for it.
            other => Err(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS, and whether to insist. Which
    /// certificates pass is the connector's business ([`Verification`]).
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Where the roots a server's certificate chain must end in come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RootCerts {
    /// No `sslrootcert`, or `sslrootcert=system`: the host's roots.
    Host,
    /// `sslrootcert=<path>`: the CA certificates in that PEM file.
    File(PathBuf),
}

/// An address's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub roots: RootCerts,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Nothing but the handshake's signatures: encrypted, not authenticated.
    None,
    /// The chain ends in a trusted root.
    Chain,
    /// The chain, and the name of the host.
    ChainAndName,
}

impl TlsSettings {
    pub fn verification(&self) -> Verification {
        match (self.mode, &self.roots) {
            (SslMode::Disable, _) => Verification::None,
            // libpq: "if a root CA file exists, the behavior of sslmode=require will be the
            // same as that of verify-ca", and prefer's TLS is verified the same way.
            (SslMode::Prefer | SslMode::Require, RootCerts::File(_)) => Verification::Chain,
            (SslMode::Prefer | SslMode::Require, RootCerts::Host) => Verification::None,
            (SslMode::VerifyCa, _) => Verification::Chain,
            (SslMode::VerifyFull, _) => Verification::ChainAndName,
        }
    }
}

/// A PostgreSQL address taken apart: what tokio-postgres reads, and how TLS is done.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
}

impl PgTarget {
    /// Reads a `postgres://` URL. The error names what is wrong but never repeats the URL (it
    /// may hold a password): the caller adds it, redacted.
    pub fn parse(url: &str) -> Result<PgTarget, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("a PostgreSQL address is a postgres:// URL".into());
        }
        let (rest, mode, root_cert) = take_tls_parameters(url)?;
        let roots = match root_cert.as_deref() {
            None | Some("system") => RootCerts::Host,
            Some("") => return Err("sslrootcert is empty".into()),
            Some(path) => RootCerts::File(PathBuf::from(path)),
        };
        let mode = match (mode.as_deref(), root_cert.as_deref()) {
            (None, Some("system")) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
            (Some(mode), _) => SslMode::parse(mode)?,
        };
        if root_cert.as_deref() == Some("system") && mode != SslMode::VerifyFull {
            return Err(
                "sslrootcert=system is for sslmode=verify-full only (as in libpq)".to_owned(),
            );
        }
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|err: tokio_postgres::Error| {
                // tokio-postgres says "invalid connection string" and puts the why in the cause.
                match std::error::Error::source(&err) {
                    Some(cause) => format!("{err}: {cause}"),
                    None => err.to_string(),
                }
            })?;
        config.ssl_mode(mode.negotiation());
        Ok(PgTarget {
            config,
            tls: TlsSettings { mode, roots },
        })
    }

    /// The same address with TLS off, whatever it said: for the embedded PostgreSQL, which is
    /// in-process behind a loopback port and speaks no TLS.
    pub fn without_tls(mut self) -> PgTarget {
        self.tls.mode = SslMode::Disable;
        self.config
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        self
    }

    /// The TLS connector for this address, its roots read now (a missing or empty
    /// `sslrootcert` is an error here, before any connection is tried).
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = crate::tls::crypto_provider();
        let builder = crate::tls::client_config_builder()
            .map_err(|err| format!("cannot set up TLS: {err}"))?;
        let roots = || -> Result<Arc<RootCertStore>, String> {
            match &self.tls.roots {
                RootCerts::Host => Ok(Arc::new(crate::tls::mozilla_roots())),
                RootCerts::File(path) => load_roots(path).map(Arc::new),
            }
        };
        // Under `disable` tokio-postgres never starts TLS: the connector is there for the
        // type's sake, and reads no root file.
        let config = match self.tls.verification() {
            Verification::None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOrNothing {
                    roots: None,
                    provider,
                }))
                .with_no_client_auth(),
            Verification::Chain => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOrNothing {
                    roots: Some(roots()?),
                    provider,
                }))
                .with_no_client_auth(),
            Verification::ChainAndName => {
                let verifier = WebPkiServerVerifier::builder_with_provider(roots()?, provider)
                    .build()
                    .map_err(|err| format!("cannot set up certificate verification: {err}"))?;
                builder.with_webpki_verifier(verifier).with_no_client_auth()
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query (the last of each wins, as in libpq):
/// the URL without them, and their percent-decoded values. The rest of the URL is kept as it was
/// written, for tokio-postgres to read.
fn take_tls_parameters(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let decode = |text: &str| {
        percent_decode_str(text)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| format!("`{text}` is not UTF-8 once percent-decoded"))
    };
    let (mut mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(key)?.as_str() {
            "sslmode" => mode = Some(decode(value)?),
            "sslrootcert" => root_cert = Some(decode(value)?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root_cert))
}

/// The CA certificates of a PEM file.
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("cannot read sslrootcert {shown}: {err}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(format!(
            "sslrootcert {shown} holds no usable CA certificate"
        ));
    }
    Ok(roots)
}

/// Whether a connection failed in TLS itself: the server refused TLS that the address requires,
/// or its certificate was refused. A setting to fix, which trying again does not mend (unlike a
/// server that is not up yet).
pub fn is_tls_failure(err: &tokio_postgres::Error) -> bool {
    // tokio-postgres keeps its error kinds private; this is the text of its `Kind::Tls`.
    err.to_string() == "error performing TLS handshake"
}

/// The certificate checks rustls's own verifier does not make: with no `roots`, `prefer` and
/// `require` without a root file (libpq's "encrypt, do not authenticate"); with `roots`,
/// `verify-ca` (the chain must end in a trusted root, and the name in the certificate is not
/// compared with the host: a server reached by an address its certificate does not name). The
/// handshake's signatures are checked either way, so the session is with the holder of the key
/// of the certificate shown.
#[derive(Debug)]
struct ChainOrNothing {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOrNothing {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> PgTarget {
        PgTarget::parse(url).unwrap()
    }

    #[test]
    fn prefer_is_the_default_and_verifies_nothing() {
        let parsed = target("postgres://nexus@db.example:5432/nexus");
        assert_eq!(parsed.tls.mode, SslMode::Prefer);
        assert_eq!(parsed.tls.roots, RootCerts::Host);
        assert_eq!(parsed.tls.verification(), Verification::None);
        assert_eq!(
            parsed.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
    }

    #[test]
    fn every_libpq_mode_is_read_and_told_to_tokio_postgres() {
        use tokio_postgres::config::SslMode as Negotiation;
        for (written, mode, negotiation, verification) in [
            (
                "disable",
                SslMode::Disable,
                Negotiation::Disable,
                Verification::None,
            ),
            (
                "prefer",
                SslMode::Prefer,
                Negotiation::Prefer,
                Verification::None,
            ),
            (
                "require",
                SslMode::Require,
                Negotiation::Require,
                Verification::None,
            ),
            (
                "verify-ca",
                SslMode::VerifyCa,
                Negotiation::Require,
                Verification::Chain,
            ),
            (
                "verify-full",
                SslMode::VerifyFull,
                Negotiation::Require,
                Verification::ChainAndName,
            ),
        ] {
            let parsed = target(&format!("postgresql://u@h/db?sslmode={written}"));
            assert_eq!(parsed.tls.mode, mode, "{written}");
            assert_eq!(parsed.config.get_ssl_mode(), negotiation, "{written}");
            assert_eq!(parsed.tls.verification(), verification, "{written}");
        }
    }

    #[test]
    fn the_tls_parameters_are_taken_out_and_the_rest_is_kept() {
        let parsed = target(
            "postgres://nexus:s3cret@db.example:6432/nexus?application_name=hub&sslmode=verify-full&sslrootcert=%2Fetc%2Fnexus%2Fca%20one.pem&connect_timeout=3",
        );
        assert_eq!(parsed.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            parsed.tls.roots,
            RootCerts::File(PathBuf::from("/etc/nexus/ca one.pem"))
        );
        assert_eq!(parsed.config.get_application_name(), Some("hub"));
        assert_eq!(
            parsed.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert_eq!(parsed.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(parsed.config.get_ports(), &[6432]);
        assert_eq!(parsed.config.get_dbname(), Some("nexus"));

        assert_eq!(
            take_tls_parameters("postgres://h/db?sslrootcert=/ca.pem&sslmode=require").unwrap(),
            (
                "postgres://h/db".to_owned(),
                Some("require".to_owned()),
                Some("/ca.pem".to_owned())
            )
        );
        assert_eq!(
            take_tls_parameters("postgres://h/db").unwrap(),
            ("postgres://h/db".to_owned(), None, None)
        );
    }

    #[test]
    fn a_root_file_makes_prefer_and_require_verify_the_chain_as_libpq_does() {
        for mode in ["prefer", "require"] {
            let parsed = target(&format!(
                "postgres://h/db?sslmode={mode}&sslrootcert=/ca.pem"
            ));
            assert_eq!(parsed.tls.verification(), Verification::Chain, "{mode}");
        }
        assert_eq!(
            target("postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem")
                .tls
                .verification(),
            Verification::ChainAndName
        );
    }

    #[test]
    fn sslrootcert_system_is_the_hosts_roots_and_means_verify_full() {
        let parsed = target("postgres://h/db?sslrootcert=system");
        assert_eq!(parsed.tls.mode, SslMode::VerifyFull);
        assert_eq!(parsed.tls.roots, RootCerts::Host);
        let refused =
            PgTarget::parse("postgres://h/db?sslrootcert=system&sslmode=require").unwrap_err();
        assert!(refused.contains("verify-full"), "{refused}");
    }

    #[test]
    fn unknown_modes_and_non_urls_are_refused_without_repeating_the_address() {
        let refused = PgTarget::parse("postgres://u:s3cret@h/db?sslmode=allow").unwrap_err();
        assert!(refused.contains("sslmode `allow`"), "{refused}");
        assert!(!refused.contains("s3cret"), "{refused}");
        let refused = PgTarget::parse("host=h sslmode=verify-full").unwrap_err();
        assert!(refused.contains("postgres://"), "{refused}");
        let refused = PgTarget::parse("postgres://h/db?sslrootcert=").unwrap_err();
        assert!(refused.contains("empty"), "{refused}");
        // What tokio-postgres refuses, it says why.
        let refused = PgTarget::parse("postgres://h/db?sslcert=/client.pem").unwrap_err();
        assert!(refused.contains("sslcert"), "{refused}");
    }

    #[test]
    fn without_tls_turns_any_mode_off() {
        let parsed = target("postgres://h/db?sslmode=verify-full").without_tls();
        assert_eq!(parsed.tls.mode, SslMode::Disable);
        assert_eq!(
            parsed.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn connectors_are_built_for_every_mode_and_a_bad_root_file_is_named() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let parsed = target(&format!("postgres://h/db?sslmode={mode}"));
            assert!(parsed.connector().is_ok(), "{mode}");
        }
        let missing = target("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        let err = missing.connector().err().unwrap();
        assert!(
            err.contains("cannot read sslrootcert /nonexistent/ca.pem"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = target(&format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ))
        .connector()
        .err()
        .unwrap();
        assert!(err.contains("holds no usable CA certificate"), "{err}");
        // Under `disable` the root file is never read.
        assert!(
            target("postgres://h/db?sslmode=disable&sslrootcert=/nonexistent/ca.pem")
                .connector()
                .is_ok()
        );
    }
}
