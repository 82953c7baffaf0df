//! Benchmark of tenant components, run by `bench/tenant.sh` against the real Redis and a fresh
//! PostgreSQL database:
//!
//! 1. A bot's turn in nexus's sandbox (`TenantComponents::bot_turn`: a fresh instance of the FAQ
//!    bot under its CPU, memory and time limits, its key-value call to Redis) against the
//!    baseline of the alternative nexus offers, a webhook bot: the same turn's JSON posted to a
//!    native bot on loopback (hyper, keep-alive, an answer computed in no time), in the same run.
//! 2. A hot swap: from activating a version in PostgreSQL to the host serving it, with the
//!    version's code new to the host (compiled then) and already compiled (a rollback), against
//!    the baseline of one turn.
//!
//!   nexus-bench-tenant-turn <database url> <redis url> <faq-bot.wasm> <other-bot.wasm>
//!   (TURNS, SWAPS, ROUNDS from the environment)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use nexus_host::bindings::tenant::bot::nexus::tenant::types::{
    Conversation, CustomerMessage, Turn, TurnEvent,
};
use nexus_host::engine::{EngineSettings, build_engine, spawn_epoch_ticker};
use nexus_host::metrics::Metrics;
use nexus_host::platform::{Platform, PlatformConfig};
use nexus_host::tenant::{Target, TenantComponents, TenantSettings};
use serde_json::json;
use sha2::{Digest, Sha256};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [database_url, redis_url, faq, other] = args.as_slice() else {
        bail!(
            "usage: nexus-bench-tenant-turn <database url> <redis url> <faq-bot.wasm> <other-bot.wasm>"
        );
    };
    let turns = env_number("TURNS", 2000);
    let swaps = env_number("SWAPS", 10);
    let rounds = env_number("ROUNDS", 3);

    nexus_host::migrate::migrate_url(database_url).await?;
    let work = std::env::temp_dir().join(format!("nexus-bench-tenant-{}", std::process::id()));
    let platform = Platform::start(
        PlatformConfig {
            redis_url: Some(redis_url.clone()),
            database_url: Some(database_url.clone()),
        },
        &work,
    )
    .await?;
    let engine = build_engine(&EngineSettings {
        max_instances: 64,
        max_memory_bytes: 64 << 20,
        // No on-disk cache: a new version's compile is part of what a swap costs.
        cache_dir: None,
    })?;
    spawn_epoch_ticker(&engine)?;
    let components = Arc::new(TenantComponents::new(
        engine,
        platform.postgres.clone(),
        platform.redis.clone(),
        Arc::new(Metrics::default()),
        TenantSettings {
            max_concurrent_calls: 32,
            max_memory_bytes: 64 << 20,
            redis_key_prefix: format!("bench-tenant-{}:", std::process::id()),
            // The bots measured here reach no host.
            allow_private_outbound: false,
            redis_address: redis_url.clone(),
            database: database_url.clone(),
        },
    )?);
    let (db, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let store = Store::create(&db, &[std::fs::read(faq)?, std::fs::read(other)?]).await?;
    let webhook = spawn_webhook_bot().await?;
    let client = reqwest::Client::new();
    let turn = sample_turn();

    println!(
        "| round | sandboxed turn µs (mean) | p99 µs | webhook turn µs (mean) | p99 µs | sandboxed / webhook | swap, new code ms | swap, compiled code ms | compiled swap / turn |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for round in 1..=rounds {
        let target = store.target(&db).await?;
        // Warm both paths (the bot is loaded and compiled; the connection to the webhook bot open).
        for _ in 0..50 {
            sandboxed_turn(&components, &target, &turn).await?;
            webhook_turn(&client, webhook, &turn).await?;
        }
        let mut sandboxed = Vec::with_capacity(turns);
        let mut webhooked = Vec::with_capacity(turns);
        // Interleaved, so that whatever else the machine does weighs on both alike.
        for _ in 0..turns {
            let started = Instant::now();
            sandboxed_turn(&components, &target, &turn).await?;
            sandboxed.push(started.elapsed());
            let started = Instant::now();
            webhook_turn(&client, webhook, &turn).await?;
            webhooked.push(started.elapsed());
        }

        // Swaps: to a version whose code the host never saw (its bytes made unique), then back to
        // the version before it, whose compiled code the host still has.
        let mut fresh = Vec::with_capacity(swaps);
        let mut compiled = Vec::with_capacity(swaps);
        for swap in 0..swaps {
            let unique = store
                .upload_unique(&db, 1, &format!("{round}-{swap}"))
                .await?;
            let started = Instant::now();
            let target = store.activate(&db, unique).await?;
            components
                .refresh(&target)
                .await
                .map_err(|err| anyhow::anyhow!("{err}"))?;
            sandboxed_turn(&components, &target, &turn).await?;
            fresh.push(started.elapsed());

            let started = Instant::now();
            let target = store.activate(&db, 0).await?;
            components
                .refresh(&target)
                .await
                .map_err(|err| anyhow::anyhow!("{err}"))?;
            sandboxed_turn(&components, &target, &turn).await?;
            compiled.push(started.elapsed());
        }
        let (sandboxed_mean, sandboxed_p99) = summary(&mut sandboxed);
        let (webhook_mean, webhook_p99) = summary(&mut webhooked);
        let (fresh_median, _) = median(&mut fresh);
        let (compiled_median, _) = median(&mut compiled);
        println!(
            "| {round} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.2} | {:.1} |",
            micros(sandboxed_mean),
            micros(sandboxed_p99),
            micros(webhook_mean),
            micros(webhook_p99),
            micros(sandboxed_mean) / micros(webhook_mean),
            millis(fresh_median),
            millis(compiled_median),
            micros(compiled_median) / micros(sandboxed_mean),
        );
    }
    drop(platform);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The mean and the 99th percentile.
fn summary(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let mean = total / u32::try_from(samples.len().max(1)).unwrap_or(u32::MAX);
    let p99 = samples
        .get(samples.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    (mean, p99)
}

/// The median (and the largest).
fn median(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (
        samples.get(samples.len() / 2).copied().unwrap_or_default(),
        samples.last().copied().unwrap_or_default(),
    )
}

fn sample_turn() -> Turn {
    Turn {
        id: "bench-turn".into(),
        event: TurnEvent::Message,
        conversation: Conversation {
            id: "00000000-0000-4000-8000-000000000001".into(),
            contact_center_id: "bench".into(),
            channel_id: "00000000-0000-4000-8000-000000000002".into(),
            channel_type: "chat".into(),
            started_at: "2026-11-21T10:00:00Z".into(),
            customer_nickname: "Ada".into(),
            user_data: Vec::new(),
        },
        messages: vec![CustomerMessage {
            position: 3,
            text: "when are you open?".into(),
            timestamp: "2026-11-21T10:00:05Z".into(),
        }],
    }
}

async fn sandboxed_turn(
    components: &TenantComponents,
    target: &Target,
    turn: &Turn,
) -> anyhow::Result<()> {
    let actions = components
        .bot_turn(target, turn)
        .await
        .map_err(|err| anyhow::anyhow!("the sandboxed turn failed: {err}"))?
        .map_err(|reason| anyhow::anyhow!("the bot declined: {reason}"))?;
    if actions.is_empty() {
        bail!("the bot took no action");
    }
    Ok(())
}

/// The same turn, as the bot webhook contract carries it, to a native bot on loopback.
async fn webhook_turn(
    client: &reqwest::Client,
    bot: SocketAddr,
    turn: &Turn,
) -> anyhow::Result<()> {
    let body = json!({
        "turnId": turn.id,
        "event": "message",
        "conversation": {
            "id": turn.conversation.id,
            "contactCenterId": turn.conversation.contact_center_id,
            "channelId": turn.conversation.channel_id,
            "channelType": turn.conversation.channel_type,
            "startedAt": turn.conversation.started_at,
            "customer": {"nickname": turn.conversation.customer_nickname},
            "userData": {},
        },
        "messages": turn.messages.iter().map(|m| json!({"position": m.position, "text": m.text, "timestamp": m.timestamp})).collect::<Vec<_>>(),
    });
    let answer: serde_json::Value = client
        .post(format!("http://{bot}/turn"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if answer["actions"].as_array().is_none_or(Vec::is_empty) {
        bail!("the webhook bot took no action");
    }
    Ok(())
}

/// A native webhook bot: it reads the turn and answers the FAQ bot's answer to it.
async fn spawn_webhook_bot() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let turn: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let text = turn["messages"][0]["text"]
                            .as_str()
                            .unwrap_or_default()
                            .to_lowercase();
                        let answer = if text.contains("open") {
                            json!({"actions": [
                                {"type": "reply", "text": "We are open Monday to Friday, 8:00 to 18:00."},
                                {"type": "setUserData", "data": {"faqTopic": "hours"}},
                            ]})
                        } else {
                            json!({"actions": [{"type": "handoff"}]})
                        };
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(
                            answer.to_string(),
                        ))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

/// The benchmark's tenant and its bot component in PostgreSQL, written as provisioning writes
/// them.
struct Store {
    tenant_id: i64,
    component_id: String,
    /// The versions uploaded at the start (1: the FAQ bot, 2: the other bot).
    wasm: Vec<Vec<u8>>,
}

impl Store {
    async fn create(db: &tokio_postgres::Client, wasm: &[Vec<u8>]) -> anyhow::Result<Store> {
        let tenant_id: i64 = db
            .query_one(
                "INSERT INTO tenants (ccid, name, token_secret) VALUES ('bench', 'bench', 'x') RETURNING id",
                &[],
            )
            .await
            .context("create the tenant")?
            .get(0);
        let component_id: String = db
            .query_one(
                "INSERT INTO tenant_components (id, tenant_id, name, kind) \
                 VALUES (gen_random_uuid(), $1, 'faq', 'bot') RETURNING id::text",
                &[&tenant_id],
            )
            .await
            .context("create the component")?
            .get(0);
        let store = Store {
            tenant_id,
            component_id,
            wasm: wasm.to_vec(),
        };
        for bytes in wasm {
            store.upload(db, bytes).await?;
        }
        store.activate(db, 1).await?;
        Ok(store)
    }

    /// Stores `wasm` as the next version: its number.
    async fn upload(&self, db: &tokio_postgres::Client, wasm: &[u8]) -> anyhow::Result<i32> {
        let size = i32::try_from(wasm.len())?;
        let sha256 = hex::encode(Sha256::digest(wasm));
        let version: i32 = db
            .query_one(
                "WITH next AS (UPDATE tenant_components SET latest_version = latest_version + 1 \
                               WHERE id = $1::text::uuid RETURNING latest_version) \
                 INSERT INTO tenant_component_versions (component_id, version, wasm, sha256, size_bytes) \
                 SELECT $1::text::uuid, latest_version, $2, $3, $4 FROM next RETURNING version",
                &[&self.component_id, &wasm, &sha256, &size],
            )
            .await
            .context("store a version")?
            .get(0);
        Ok(version)
    }

    /// Stores the version `index` of the start again, made unique by a custom section (so its
    /// SHA-256, and so its compiled code, is new to the host): its number.
    async fn upload_unique(
        &self,
        db: &tokio_postgres::Client,
        index: usize,
        tag: &str,
    ) -> anyhow::Result<i32> {
        let mut wasm = self.wasm.get(index).cloned().context("no such version")?;
        // A custom section (id 0): its size, then its name's, the name, and the payload.
        let name = b"nexus-bench";
        let payload = tag.as_bytes();
        let size = 1 + name.len() + payload.len();
        wasm.push(0);
        wasm.push(u8::try_from(size)?);
        wasm.push(u8::try_from(name.len())?);
        wasm.extend_from_slice(name);
        wasm.extend_from_slice(payload);
        self.upload(db, &wasm).await
    }

    /// Makes `version` active (0: version 1) and bumps the revision, as provisioning does: the
    /// target a caller would pass.
    async fn activate(&self, db: &tokio_postgres::Client, version: i32) -> anyhow::Result<Target> {
        let version = version.max(1);
        let revision: i64 = db
            .query_one(
                "UPDATE tenant_components SET previous_version = active_version, active_version = $2, \
                        revision = revision + 1, updated_at = now() \
                 WHERE id = $1::text::uuid RETURNING revision",
                &[&self.component_id, &version],
            )
            .await
            .context("activate a version")?
            .get(0);
        Ok(Target {
            tenant_id: self.tenant_id,
            name: "faq".into(),
            revision,
        })
    }

    /// The target as it is now.
    async fn target(&self, db: &tokio_postgres::Client) -> anyhow::Result<Target> {
        let revision: i64 = db
            .query_one(
                "SELECT revision FROM tenant_components WHERE id = $1::text::uuid",
                &[&self.component_id],
            )
            .await?
            .get(0);
        Ok(Target {
            tenant_id: self.tenant_id,
            name: "faq".into(),
            revision,
        })
    }
}
