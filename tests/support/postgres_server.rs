//! A PostgreSQL server of the test's own, on a free port, with TLS or without: a test that must
//! know what the server offers cannot use the shared one on 5432 (Debian's default cluster, for
//! one, has TLS on). With TLS, its pg_hba.conf takes TCP connections only over TLS, so a
//! connection that works is known to be encrypted.
//!
//! The binaries are PostgreSQL's own (`/usr/lib/postgresql/<version>/bin`; `scripts/services.sh`
//! installs them); as root, the server runs as the `postgres` user, which initdb insists on.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The server's certificate and its key, in PEM.
pub struct ServerCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct PostgresServer {
    pub port: u16,
    /// What the server has written to its stderr (its log).
    log: Arc<Mutex<Vec<String>>>,
    child: Option<Child>,
    /// Its data directory and certificate, removed once the server has stopped.
    _dir: tempfile::TempDir,
}

/// A port nothing listens on now (the kernel's choice for port 0).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// The newest installed PostgreSQL's `bin` directory.
fn pg_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/services.sh installs it)");
    versions
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/<version>/bin/postgres")
}

/// The `postgres` user's uid and gid, when the test runs as root (initdb and postgres refuse to).
fn server_user() -> Option<(u32, u32)> {
    let running_as_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false);
    if !running_as_root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect("running as root, the server needs the `postgres` user (scripts/services.sh)");
    let fields: Vec<&str> = line.split(':').collect();
    Some((
        fields[2].parse().expect("a uid"),
        fields[3].parse().expect("a gid"),
    ))
}

/// A command that runs as the server's user.
fn command(program: PathBuf, user: Option<(u32, u32)>) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

fn give_to(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    }
}

impl PostgresServer {
    /// initdb, then a server on a free loopback port (with TLS when given a certificate), and
    /// waits until it says it accepts connections. Its one database is `postgres`, user
    /// `postgres`, with trust authentication.
    pub async fn start(tls: Option<ServerCertificate>) -> PostgresServer {
        tokio::task::spawn_blocking(move || Self::start_blocking(tls.as_ref()))
            .await
            .expect("the PostgreSQL start-up task")
    }

    fn start_blocking(tls: Option<&ServerCertificate>) -> PostgresServer {
        let bin = pg_bin();
        let user = server_user();
        let dir = tempfile::tempdir().expect("a directory for PostgreSQL");
        give_to(dir.path(), user);
        let data = dir.path().join("data");
        let initdb = command(bin.join("initdb"), user)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_owned(),
            // No Unix socket: Debian's default directory may not exist, and TCP is what is tested.
            "unix_socket_directories=".to_owned(),
            "fsync=off".to_owned(),
        ];
        if let Some(tls) = tls {
            let cert = dir.path().join("server.crt");
            let key = dir.path().join("server.key");
            std::fs::write(&cert, &tls.cert_pem).expect("write the server certificate");
            std::fs::write(&key, &tls.key_pem).expect("write the server key");
            // The server refuses a key that others can read.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the key");
            give_to(&cert, user);
            give_to(&key, user);
            settings.push("ssl=on".to_owned());
            settings.push(format!("ssl_cert_file={}", cert.display()));
            settings.push(format!("ssl_key_file={}", key.display()));
            // TCP only over TLS: a plain connection is refused, so one that works is encrypted.
            std::fs::write(
                data.join("pg_hba.conf"),
                "hostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("write pg_hba.conf");
        }
        for _ in 0..5 {
            let port = free_port();
            if let Some((child, log)) = launch(&bin, &data, port, &settings, user) {
                return PostgresServer {
                    port,
                    log,
                    child: Some(child),
                    _dir: dir,
                };
            }
        }
        panic!("no PostgreSQL server could be started on a free port");
    }

    /// `postgres://postgres@{host}:{port}/postgres`, then `?{query}` if any.
    pub fn url(&self, host: &str, query: &str) -> String {
        let mut url = format!("postgres://postgres@{host}:{}/postgres", self.port);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("the server's log").join("\n")
    }
}

/// Fast shutdown (SIGINT), waited for: the server ends its sessions and exits.
fn stop(mut child: Child) {
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// Starts a server on `port`, and waits until it says it accepts connections: the server and its
/// log, or nothing if the port was taken meanwhile.
fn launch(
    bin: &Path,
    data: &Path,
    port: u16,
    settings: &[String],
    user: Option<(u32, u32)>,
) -> Option<(Child, Arc<Mutex<Vec<String>>>)> {
    let mut postgres = command(bin.join("postgres"), user);
    postgres.arg("-D").arg(data).arg("-p").arg(port.to_string());
    for setting in settings {
        postgres.arg("-c").arg(setting);
    }
    let mut child = postgres
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start postgres");
    let stderr = child.stderr.take().expect("piped stderr");
    // The server's log, read to its end so that the server never blocks on the pipe; the line
    // that says it is ready is the event waited for.
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let lines = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready to accept connections") {
                let _ = ready_tx.send(());
            }
            lines.lock().expect("the server's log").push(line);
        }
    });
    // An error (not a time-out) comes at once when the server exits before it is ready.
    if ready_rx.recv_timeout(Duration::from_secs(60)).is_ok() {
        return Some((child, log));
    }
    stop(child);
    let text = log.lock().expect("the server's log").join("\n");
    assert!(
        text.contains("could not bind") || text.contains("could not create any TCP/IP sockets"),
        "PostgreSQL did not start; its log:\n{text}"
    );
    None
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}
