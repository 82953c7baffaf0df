//! Tenant components: a bot's turn and a transform's message, run as the host runs them.

use std::path::Path;

use anyhow::{Context, bail};

use crate::bindings::tenant::bot::BotPre;
pub use crate::bindings::tenant::bot::nexus::tenant::types::{
    Action, Conversation, CustomerMessage, Direction, Handoff, Message, Question, Turn, TurnEvent,
    UserDataChange, UserDataEntry,
};
use crate::bindings::tenant::transform::TransformPre;
use crate::runtime::{CallError, Limits, State, call_error, call_runtime, keep_output, runtime};
use crate::{Fakes, build_component};

/// Loads a tenant component as the host does at upload: its size, its imports, then links it.
fn load(path: &Path) -> anyhow::Result<wasmtime::component::InstancePre<State>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let max = nexus_guest::tenant_contract::MAX_COMPONENT_BYTES;
    if usize::try_from(size).map_or(true, |size| size > max) {
        bail!(
            "{} is {size} bytes; nexus accepts at most {max}",
            path.display()
        );
    }
    let runtime = runtime()?;
    let component = runtime.component(path)?;
    let imports: Vec<String> = component
        .component_type()
        .imports(&runtime.engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    nexus_guest::tenant_contract::check_imports(imports.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)?;
    runtime
        .linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .context("the component cannot be linked")
}

/// What a tenant component exports.
#[derive(Clone)]
enum Pre {
    Bot(BotPre<State>),
    Transform(TransformPre<State>),
}

/// A call's argument, for [`Pre`]'s export.
enum Input<'a> {
    Turn(&'a Turn),
    Message(&'a Message),
}

/// A call's answer.
enum Output {
    Actions(Result<Vec<Action>, String>),
    Text(Result<String, String>),
}

/// One call, as the host makes it: a fresh instance in a fresh store under `limits`, bound to
/// `fakes`; what it printed goes to the log fake.
async fn call(
    pre: &Pre,
    limits: &Limits,
    fakes: &Fakes,
    input: Input<'_>,
) -> Result<Output, CallError> {
    let runtime = call_runtime()?;
    fakes.log.start_call();
    let (mut store, stdout, stderr) = runtime.store(fakes, limits);
    let outcome = tokio::time::timeout(limits.timeout, async {
        match (pre, input) {
            (Pre::Bot(pre), Input::Turn(turn)) => {
                let bot = pre.instantiate_async(&mut store).await?;
                bot.nexus_tenant_bot_turn()
                    .call_handle(&mut store, turn)
                    .await
                    .map(Output::Actions)
            }
            (Pre::Transform(pre), Input::Message(message)) => {
                let transform = pre.instantiate_async(&mut store).await?;
                transform
                    .nexus_tenant_message_transform()
                    .call_apply(&mut store, message)
                    .await
                    .map(Output::Text)
            }
            _ => Err(wasmtime::Error::msg(
                "the component's export does not take this call",
            )),
        }
    })
    .await;
    keep_output(fakes, &stdout, &stderr);
    match outcome {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(err)) => Err(call_error(
            &err,
            &[stdout.contents(), stderr.contents()].concat(),
        )),
        Err(_) => Err(CallError::Timeout),
    }
}

/// A tenant bot (the `nexus:tenant/bot` world).
#[derive(Clone)]
pub struct TenantBot {
    pre: Pre,
    limits: Limits,
}

impl TenantBot {
    /// Loads the bot at `path` (a `.wasm` component).
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<TenantBot> {
        let pre = BotPre::new(load(path.as_ref())?)
            .map_err(anyhow::Error::from)
            .context("the component does not export nexus:tenant/bot-turn")?;
        Ok(TenantBot {
            pre: Pre::Bot(pre),
            limits: Limits::default(),
        })
    }

    /// Builds the crate at `manifest_dir` for wasm32-wasip2 and loads it (see
    /// [`build_component`]): `TenantBot::build(env!("CARGO_MANIFEST_DIR"))`.
    pub fn build(manifest_dir: impl AsRef<Path>) -> anyhow::Result<TenantBot> {
        TenantBot::load(build_component(manifest_dir)?)
    }

    /// The same bot, called under `limits`.
    pub fn with_limits(mut self, limits: Limits) -> TenantBot {
        self.limits = limits;
        self
    }

    /// Takes `turn` with `fakes` as the bot's imports: its actions, or the reason it declined.
    pub fn handle(
        &self,
        fakes: &Fakes,
        turn: Turn,
    ) -> Result<Result<Vec<Action>, String>, CallError> {
        call_runtime()?.block_on(self.handle_async(fakes, turn))
    }

    /// [`TenantBot::handle`], from an async test.
    pub async fn handle_async(
        &self,
        fakes: &Fakes,
        turn: Turn,
    ) -> Result<Result<Vec<Action>, String>, CallError> {
        match call(&self.pre, &self.limits, fakes, Input::Turn(&turn)).await? {
            Output::Actions(answer) => Ok(answer),
            Output::Text(_) => Err(CallError::Setup("not a bot".into())),
        }
    }
}

/// A tenant transform (the `nexus:tenant/transform` world).
#[derive(Clone)]
pub struct TenantTransform {
    pre: Pre,
    limits: Limits,
}

impl TenantTransform {
    /// Loads the transform at `path` (a `.wasm` component).
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<TenantTransform> {
        let pre = TransformPre::new(load(path.as_ref())?)
            .map_err(anyhow::Error::from)
            .context("the component does not export nexus:tenant/message-transform")?;
        Ok(TenantTransform {
            pre: Pre::Transform(pre),
            limits: Limits::default(),
        })
    }

    /// Builds the crate at `manifest_dir` for wasm32-wasip2 and loads it (see
    /// [`build_component`]).
    pub fn build(manifest_dir: impl AsRef<Path>) -> anyhow::Result<TenantTransform> {
        TenantTransform::load(build_component(manifest_dir)?)
    }

    /// The same transform, called under `limits`.
    pub fn with_limits(mut self, limits: Limits) -> TenantTransform {
        self.limits = limits;
        self
    }

    /// Runs on `message`: the text as it should be, or the reason it is refused.
    pub fn apply(
        &self,
        fakes: &Fakes,
        message: Message,
    ) -> Result<Result<String, String>, CallError> {
        call_runtime()?.block_on(self.apply_async(fakes, message))
    }

    /// [`TenantTransform::apply`], from an async test.
    pub async fn apply_async(
        &self,
        fakes: &Fakes,
        message: Message,
    ) -> Result<Result<String, String>, CallError> {
        match call(&self.pre, &self.limits, fakes, Input::Message(&message)).await? {
            Output::Text(answer) => Ok(answer),
            Output::Actions(_) => Err(CallError::Setup("not a transform".into())),
        }
    }
}

/// The conversation of the turns and messages these builders make.
fn sample_conversation() -> Conversation {
    Conversation {
        id: "conversation-1".into(),
        contact_center_id: "contact-center-1".into(),
        channel_id: "channel-1".into(),
        channel_type: "chat".into(),
        started_at: "2026-01-01T09:00:00Z".into(),
        customer_nickname: "Ada".into(),
        user_data: Vec::new(),
    }
}

impl Turn {
    /// The bot has just been given a conversation with no message yet.
    pub fn started() -> Turn {
        Turn {
            id: "turn-1".into(),
            event: TurnEvent::Started,
            conversation: sample_conversation(),
            messages: Vec::new(),
        }
    }

    /// The customer wrote `text`.
    pub fn message(text: &str) -> Turn {
        Turn {
            id: "turn-1".into(),
            event: TurnEvent::Message,
            conversation: sample_conversation(),
            messages: vec![CustomerMessage {
                position: 1,
                text: text.to_owned(),
                timestamp: "2026-01-01T09:00:05Z".into(),
            }],
        }
    }

    /// The same turn in the conversation `id`.
    pub fn in_conversation(mut self, id: &str) -> Turn {
        self.conversation.id = id.to_owned();
        self
    }

    /// The same turn, with `key` set to `value` in the conversation's user data.
    pub fn with_user_data(mut self, key: &str, value: &str) -> Turn {
        self.conversation.user_data.retain(|entry| entry.key != key);
        self.conversation.user_data.push(UserDataEntry {
            key: key.to_owned(),
            value: value.to_owned(),
        });
        self
    }

    /// The same turn, from a customer called `nickname`.
    pub fn from_customer(mut self, nickname: &str) -> Turn {
        self.conversation.customer_nickname = nickname.to_owned();
        self
    }
}

impl Message {
    /// A customer's message, `text`, before nexus stores it.
    pub fn inbound(text: &str) -> Message {
        Message::with_direction(text, Direction::Inbound, "Customer")
    }

    /// An agent's message, `text`, before nexus stores and sends it.
    pub fn outbound(text: &str) -> Message {
        Message::with_direction(text, Direction::Outbound, "Agent")
    }

    fn with_direction(text: &str, direction: Direction, sender_kind: &str) -> Message {
        let conversation = sample_conversation();
        Message {
            conversation_id: conversation.id,
            contact_center_id: conversation.contact_center_id,
            channel_id: conversation.channel_id,
            channel_type: conversation.channel_type,
            direction,
            sender_kind: sender_kind.to_owned(),
            text: text.to_owned(),
        }
    }
}
