//! `nexus up --demo`: a demo contact center on the nexus that just started, for a first try on a
//! laptop (never on by default). Through the provisioning API, as an operator would, it makes
//! (or finds, on a later start) the tenant `demo` with:
//!
//! - a chat channel `web` whose chats go to the FAQ bot (`examples/tenant/faq-bot`, pushed as a
//!   tenant component when it is built) and then to the queue `support`;
//! - an agent `ann` and a supervisor `sam`, and a chat API key for the widget.
//!
//! The key and the agents' tokens are shown only when they are made, so they are kept in
//! `demo.json` in the data directory (mode 600) and made again when that file or the tenant's
//! copy is gone. The answer is the demo page's URL, which carries them in its fragment.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::component_cli::{api_message, call};

/// The demo's tenant, channel, queue, bot and people.
const TENANT: &str = "demo";
const CHANNEL: &str = "web";
const QUEUE: &str = "support";
const BOT: &str = "helper";
const BOT_COMPONENT: &str = "faq";
const KEY_NAME: &str = "demo widget";
const AGENT: (&str, &str) = ("ann", "Ann");
const SUPERVISOR: (&str, &str) = ("sam", "Sam");

/// What the demo page needs, kept between starts in `demo.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoAccess {
    pub api_key: String,
    pub api_key_id: String,
    pub agent_token: String,
    pub agent_id: String,
    pub supervisor_token: String,
    pub supervisor_id: String,
    /// Whether a bot answers first (the FAQ bot was built and pushed).
    pub bot: bool,
}

impl DemoAccess {
    /// The demo page, with what it needs in the fragment (which browsers never send).
    pub fn page_url(&self, base: &str) -> String {
        format!(
            "{base}/demo/#key={}&endpoint={CHANNEL}&agent={}&supervisor={}",
            self.api_key, self.agent_token, self.supervisor_token
        )
    }
}

/// The provisioning API of the nexus at `base`, with the admin token.
struct Provisioning<'a> {
    base: &'a str,
    admin_token: &'a str,
}

impl Provisioning<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let url = url::Url::parse(&format!(
            "{}/nexus/v3/provisioning/tenants{path}",
            self.base
        ))
        .with_context(|| format!("{path} makes no URL"))?;
        let (body, content_type) = match body {
            Some(body) => (Bytes::from(body.to_string()), Some("application/json")),
            None => (Bytes::new(), None),
        };
        call(method, &url, self.admin_token, body, content_type).await
    }

    /// A call that must succeed: its `data`.
    async fn must(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, answer) = self.call(method.clone(), path, body).await?;
        if !status.is_success() {
            bail!(
                "{method} {path}: nexus answered {status}: {}",
                api_message(&answer)
            );
        }
        Ok(answer["data"].clone())
    }
}

/// Makes or finds the demo contact center on the nexus at `base` (for instance
/// `http://127.0.0.1:3000`); `manifest_dir` is where the built FAQ bot is looked for.
pub async fn provision(
    base: &str,
    admin_token: &str,
    data_dir: &Path,
    manifest_dir: &Path,
) -> anyhow::Result<DemoAccess> {
    if admin_token.is_empty() {
        bail!(
            "--demo needs the provisioning API: set the application variable admin_token (SPIN_VARIABLE_ADMIN_TOKEN; scripts/up.sh makes one)"
        );
    }
    let api = Provisioning { base, admin_token };
    let saved_file = data_dir.join("demo.json");
    let saved: Option<DemoAccess> = std::fs::read(&saved_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());

    let (status, answer) = api.call(Method::GET, &format!("/{TENANT}"), None).await?;
    match status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            api.must(
                Method::POST,
                "",
                Some(json!({"ccid": TENANT, "name": "Demo contact center"})),
            )
            .await?;
        }
        _ => bail!(
            "cannot read the demo tenant: nexus answered {status}: {}",
            api_message(&answer)
        ),
    }

    let channels = api
        .must(Method::GET, &format!("/{TENANT}/channels"), None)
        .await?;
    let existing = channels["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|channel| channel["type"] == "chat" && channel["name"] == CHANNEL)
        .cloned();
    let channel = match existing {
        Some(channel) => channel,
        None => {
            api.must(
                Method::POST,
                &format!("/{TENANT}/channels"),
                Some(json!({"type": "chat", "name": CHANNEL})),
            )
            .await?
        }
    };
    let channel_id = channel["id"]
        .as_str()
        .context("the demo channel has no id")?
        .to_owned();

    api.must(
        Method::PUT,
        &format!("/{TENANT}/queues/{QUEUE}"),
        Some(json!({"skills": [], "inviteTimeoutSeconds": 60, "timeoutSeconds": 3600})),
    )
    .await?;
    let bot = demo_bot(&api, manifest_dir).await?;
    let mut routing = json!({"queue": QUEUE});
    if bot {
        routing["bot"] = json!(BOT);
    }
    api.must(
        Method::PUT,
        &format!("/{TENANT}/channels/{channel_id}/routing"),
        Some(routing),
    )
    .await?;

    let (api_key, api_key_id) = demo_key(&api, saved.as_ref()).await?;
    let (agent_token, agent_id) = demo_agent(
        &api,
        AGENT,
        "agent",
        saved.as_ref().map(|s| (&s.agent_token, &s.agent_id)),
    )
    .await?;
    let (supervisor_token, supervisor_id) = demo_agent(
        &api,
        SUPERVISOR,
        "supervisor",
        saved
            .as_ref()
            .map(|s| (&s.supervisor_token, &s.supervisor_id)),
    )
    .await?;
    let access = DemoAccess {
        api_key,
        api_key_id,
        agent_token,
        agent_id,
        supervisor_token,
        supervisor_id,
        bot,
    };
    save(&saved_file, &access)?;
    Ok(access)
}

/// The saved chat key if the tenant still has it, else a new one.
async fn demo_key(
    api: &Provisioning<'_>,
    saved: Option<&DemoAccess>,
) -> anyhow::Result<(String, String)> {
    if let Some(saved) = saved {
        let (status, _) = api
            .call(
                Method::GET,
                &format!("/{TENANT}/api-keys/{}", saved.api_key_id),
                None,
            )
            .await?;
        if status == StatusCode::OK {
            return Ok((saved.api_key.clone(), saved.api_key_id.clone()));
        }
    }
    // A key of that name whose secret was lost (only its hash is kept) is replaced.
    let keys = api
        .must(Method::GET, &format!("/{TENANT}/api-keys"), None)
        .await?;
    for lost in keys["apiKeys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|key| key["name"] == KEY_NAME)
        .filter_map(|key| key["id"].as_str())
    {
        api.must(Method::DELETE, &format!("/{TENANT}/api-keys/{lost}"), None)
            .await?;
    }
    let key = api
        .must(
            Method::POST,
            &format!("/{TENANT}/api-keys"),
            Some(json!({"name": KEY_NAME, "permission": "chat"})),
        )
        .await?;
    Ok((
        key["key"]
            .as_str()
            .context("the new key has no key")?
            .to_owned(),
        key["id"]
            .as_str()
            .context("the new key has no id")?
            .to_owned(),
    ))
}

/// The saved agent `username` if the tenant still has them under the same id, else the agent
/// made anew (an agent of that name whose token was lost is replaced).
async fn demo_agent(
    api: &Provisioning<'_>,
    (username, nickname): (&str, &str),
    role: &str,
    saved: Option<(&String, &String)>,
) -> anyhow::Result<(String, String)> {
    let agents = api
        .must(Method::GET, &format!("/{TENANT}/agents"), None)
        .await?;
    let existing = agents["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|agent| agent["username"] == username)
        .and_then(|agent| agent["id"].as_str().map(str::to_owned));
    if let (Some(id), Some((token, saved_id))) = (&existing, saved)
        && id == saved_id
    {
        return Ok((token.clone(), id.clone()));
    }
    if let Some(id) = existing {
        api.must(Method::DELETE, &format!("/{TENANT}/agents/{id}"), None)
            .await?;
    }
    let agent = api
        .must(
            Method::POST,
            &format!("/{TENANT}/agents"),
            Some(json!({"username": username, "nickname": nickname, "role": role, "skills": [], "capacity": {"chat": 3}})),
        )
        .await?;
    Ok((
        agent["token"]
            .as_str()
            .context("the new agent has no token")?
            .to_owned(),
        agent["id"]
            .as_str()
            .context("the new agent has no id")?
            .to_owned(),
    ))
}

/// Pushes the FAQ bot (when it is built) and registers it: whether the demo has a bot.
async fn demo_bot(api: &Provisioning<'_>, manifest_dir: &Path) -> anyhow::Result<bool> {
    let (status, _) = api
        .call(Method::GET, &format!("/{TENANT}/bots/{BOT}"), None)
        .await?;
    if status == StatusCode::OK {
        return Ok(true);
    }
    let Some(wasm) = built_faq_bot(manifest_dir) else {
        tracing::warn!(
            "the demo has no bot: build examples/tenant/faq-bot (scripts/build-components.sh) and start again"
        );
        return Ok(false);
    };
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let url = url::Url::parse(&format!(
        "{}/nexus/v3/provisioning/tenants/{TENANT}/components/{BOT_COMPONENT}/versions?kind=bot",
        api.base
    ))?;
    let (status, answer) = call(
        Method::POST,
        &url,
        api.admin_token,
        Bytes::from(bytes),
        Some("application/wasm"),
    )
    .await?;
    if !status.is_success() {
        bail!(
            "cannot push the demo bot {}: nexus answered {status}: {}",
            wasm.display(),
            api_message(&answer)
        );
    }
    api.must(
        Method::POST,
        &format!("/{TENANT}/bots"),
        Some(json!({"name": BOT, "nickname": "Helper", "component": BOT_COMPONENT})),
    )
    .await?;
    Ok(true)
}

/// The FAQ bot as the component build leaves it, where the manifest's own components are.
fn built_faq_bot(manifest_dir: &Path) -> Option<PathBuf> {
    let path = crate::manifest::cargo_output(
        manifest_dir,
        Path::new("target/wasm32-wasip2/release/faq_bot.wasm"),
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
    );
    path.is_file().then_some(path)
}

/// Keeps `access` in `file`, readable by its owner only: it holds live credentials.
fn save(file: &Path, access: &DemoAccess) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    out.write_all(serde_json::to_string_pretty(access)?.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))
}
