//! TLS to PostgreSQL end to end, on two servers of the test's own: one that takes TCP
//! connections only over TLS, with a certificate for `localhost` from a CA the test makes, and
//! one without TLS. `nexus migrate` and `nexus up` run with `DATABASE_URL` on them, and the
//! example component reaches them at addresses with every `sslmode`.
//!
//! The certificate names `localhost` and not 127.0.0.1, so the same server reached as
//! 127.0.0.1 shows a certificate for another name: what `verify-full` refuses and `verify-ca`
//! takes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::Value;
use support::postgres_server::{PostgresServer, ServerCertificate};
use support::{Backends, Nexus, client};

/// A CA of the test's own: its certificate in PEM, and what signs with it.
fn certificate_authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    (certificate.pem(), Issuer::new(params, key))
}

fn server_certificate(names: &[&str], ca: &Issuer<'_, KeyPair>) -> ServerCertificate {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let params = CertificateParams::new(names).unwrap();
    let key = KeyPair::generate().unwrap();
    ServerCertificate {
        cert_pem: params.signed_by(&key, ca).unwrap().pem(),
        key_pem: key.serialize_pem(),
    }
}

/// `nexus migrate` with `DATABASE_URL`: whether it succeeded, and what it wrote to stderr.
async fn nexus_migrate(database_url: &str, data_dir: &Path) -> (bool, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
        .arg("migrate")
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("REDIS_URL")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("nexus migrate ends within a minute")
        .expect("run nexus migrate");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The example component once per address, each at `/{name}/...`.
fn manifest(components: &[(&str, String)], allowed: &[String]) -> String {
    let allowed = allowed
        .iter()
        .map(|host| format!("\"postgres://{host}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut manifest = r#"
spin_manifest_version = 2

[application]
name = "e2e-postgres-tls"

[variables]
postgres_address = { default = "postgres://unused" }
"#
    .to_owned();
    for (name, address) in components {
        manifest.push_str(&format!(
            r#"
[[trigger.http]]
route = "/{name}/..."
component = "{name}"

[component.{name}]
source = "{{example}}"
allowed_outbound_hosts = [{allowed}]
[component.{name}.variables]
greeting = "hello"
postgres_address = "{address}"
"#
        ));
    }
    manifest
}

async fn notes(nexus: &Nexus, component: &str) -> (u16, Value) {
    let response = client()
        .get(nexus.url(&format!("/{component}/notes")))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The `postgres connection failed` warnings the host logged for `address` (given redacted).
fn connection_failures(nexus: &Nexus, address: &str) -> Vec<String> {
    nexus
        .log_events()
        .into_iter()
        .filter(|event| {
            event["fields"]["message"] == "postgres connection failed"
                && event["fields"]["address"] == address
        })
        .map(|event| {
            event["fields"]["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sslmode_reaches_postgres_as_libpq_says() {
    let (ca_pem, ca) = certificate_authority("nexus test CA");
    let (other_ca_pem, _) = certificate_authority("another CA");
    let (tls_server, plain_server) = tokio::join!(
        PostgresServer::start(Some(server_certificate(&["localhost"], &ca))),
        PostgresServer::start(None),
    );
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("ca.pem");
    let other_ca_file = files.path().join("other-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    std::fs::write(&other_ca_file, &other_ca_pem).unwrap();
    let ca = ca_file.display();
    let other_ca = other_ca_file.display();

    // `nexus migrate` with the default `sslmode` (prefer) on a server without TLS: plain.
    let (migrated, stderr) = nexus_migrate(&plain_server.url("127.0.0.1", ""), files.path()).await;
    assert!(migrated, "nexus migrate failed:\n{stderr}");

    // `nexus migrate` with `verify-full` on a server whose certificate names another host
    // fails at once (no retrying a setting), saying why, without a panic.
    let misnamed = tls_server.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let (migrated, stderr) = nexus_migrate(&misnamed, files.path()).await;
    assert!(!migrated, "nexus migrate succeeded:\n{stderr}");
    assert!(
        stderr.contains(&format!("error: TLS with {misnamed} failed"))
            && stderr.contains("certificate not valid for name"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // `nexus up` with `DATABASE_URL` verified in full: migrations, readiness and job workers
    // go through it, and so does a component that uses the same address.
    let database_url = tls_server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    // The same misnamed address with a password (the server trusts anyone): the logs must
    // show it redacted.
    let with_password =
        |password: &str| misnamed.replacen("postgres@", &format!("postgres:{password}@"), 1);
    let components = [
        ("verify-full", "{{ postgres_address }}".to_owned()),
        (
            "verify-ca",
            tls_server.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        ),
        ("require", tls_server.url("127.0.0.1", "sslmode=require")),
        // The server takes no plain TCP connection: this one was encrypted.
        ("prefer", tls_server.url("127.0.0.1", "")),
        ("misnamed", with_password("tls-test-s3cret")),
        (
            "other-ca",
            tls_server.url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other_ca}"),
            ),
        ),
        (
            "disable-on-tls-only",
            tls_server.url("127.0.0.1", "sslmode=disable"),
        ),
        (
            "prefer-plain",
            plain_server.url("127.0.0.1", "sslmode=prefer"),
        ),
        (
            "disable-plain",
            plain_server.url("127.0.0.1", "sslmode=disable"),
        ),
        (
            "require-plain",
            plain_server.url("127.0.0.1", "sslmode=require"),
        ),
    ];
    let allowed = [
        format!("localhost:{}", tls_server.port),
        format!("127.0.0.1:{}", tls_server.port),
        format!("127.0.0.1:{}", plain_server.port),
    ];
    let nexus = Nexus::start_with(
        &manifest(&components, &allowed),
        Backends::Embedded,
        &[("DATABASE_URL", &database_url)],
    )
    .await;

    let ready: Value = client()
        .get(nexus.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["postgres"], "ok", "{ready}");

    let posted = client()
        .post(nexus.url("/verify-full/notes"))
        .body("over TLS")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201, "{}", posted.text().await.unwrap());
    for component in ["verify-full", "verify-ca", "require", "prefer"] {
        let (status, body) = notes(&nexus, component).await;
        assert_eq!(status, 200, "{component}: {body}");
        assert_eq!(body["notes"][0]["body"], "over TLS", "{component}: {body}");
    }
    // The server without TLS, migrated by `nexus migrate` above.
    for component in ["prefer-plain", "disable-plain"] {
        let (status, body) = notes(&nexus, component).await;
        assert_eq!(status, 200, "{component}: {body}");
        assert_eq!(body["notes"], serde_json::json!([]), "{component}: {body}");
    }

    // Each refusal reaches the guest as the interface's connection-failed error, and the host
    // says why in its log.
    let address_of = |name: &str| {
        let (_, address) = components.iter().find(|(n, _)| *n == name).unwrap();
        address.clone()
    };
    let refusals = [
        (
            "misnamed",
            with_password("***"),
            "certificate not valid for name",
        ),
        ("other-ca", address_of("other-ca"), "UnknownIssuer"),
        (
            "disable-on-tls-only",
            address_of("disable-on-tls-only"),
            "no encryption",
        ),
        (
            "require-plain",
            address_of("require-plain"),
            "server does not support TLS",
        ),
    ];
    for (component, logged_address, why) in refusals {
        let (status, body) = notes(&nexus, component).await;
        assert_eq!(status, 502, "{component}: {body}");
        assert_eq!(
            body["error"]["code"], "postgres-open",
            "{component}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ConnectionFailed"),
            "{component}: {body}"
        );
        let logged = connection_failures(&nexus, &logged_address);
        assert!(
            logged.iter().any(|error| error.contains(why)),
            "{component}: no `{why}` logged for {logged_address}: {logged:?}\n{}",
            nexus.logs()
        );
    }

    // Nothing crashed, and the password was never written down.
    let (status, body) = notes(&nexus, "verify-full").await;
    assert_eq!(status, 200, "{body}");
    let logs = nexus.logs();
    assert!(!logs.contains("s3cret"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}
