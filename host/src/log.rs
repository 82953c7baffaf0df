//! The log capability: `nexus:platform/log`, structured guest events in the host's log stream,
//! tagged with the component and the request they belong to.

use std::sync::Arc;

use wasmtime::component::HasData;

use crate::bindings::nexus::platform::log::{self as wit, Field, Level};

/// The longest message kept, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// The most fields kept per event.
pub const MAX_FIELDS: usize = 32;
/// The longest field key kept, in bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// The longest field value kept, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// The most events one instance may emit; later ones are dropped (and counted).
pub const MAX_EVENTS_PER_INSTANCE: u32 = 1000;

/// The target guest events are logged under, so that they can be filtered
/// (`RUST_LOG=nexus::guest=debug`).
pub const GUEST_TARGET: &str = "nexus::guest";

/// The capability's per-instance context.
pub struct LogCtx {
    component: Arc<str>,
    request_id: Arc<str>,
    emitted: u32,
    dropped: u32,
}

impl LogCtx {
    pub fn new(component: Arc<str>, request_id: Arc<str>) -> Self {
        Self {
            component,
            request_id,
            emitted: 0,
            dropped: 0,
        }
    }

    /// Events dropped because the instance went over [`MAX_EVENTS_PER_INSTANCE`].
    pub fn dropped(&self) -> u32 {
        self.dropped
    }
}

/// The `HasData` marker for [`LogCtx`].
pub struct LogCapability;

impl HasData for LogCapability {
    type Data<'a> = &'a mut LogCtx;
}

/// `text` cut to at most `max` bytes on a character boundary; whether it was cut.
fn cut(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

fn is_enabled(level: Level) -> bool {
    match level {
        Level::Trace => tracing::enabled!(target: GUEST_TARGET, tracing::Level::TRACE),
        Level::Debug => tracing::enabled!(target: GUEST_TARGET, tracing::Level::DEBUG),
        Level::Info => tracing::enabled!(target: GUEST_TARGET, tracing::Level::INFO),
        Level::Warn => tracing::enabled!(target: GUEST_TARGET, tracing::Level::WARN),
        Level::Error => tracing::enabled!(target: GUEST_TARGET, tracing::Level::ERROR),
    }
}

/// The event's fields as one JSON object, after the limits; and how many cuts were made.
fn render_fields(fields: &[Field]) -> (String, usize) {
    let mut truncated = fields.len().saturating_sub(MAX_FIELDS);
    let mut object = serde_json::Map::new();
    for field in fields.iter().take(MAX_FIELDS) {
        let (key, key_cut) = cut(&field.key, MAX_KEY_BYTES);
        let (value, value_cut) = cut(&field.value, MAX_VALUE_BYTES);
        truncated += usize::from(key_cut) + usize::from(value_cut);
        object.insert(key.to_owned(), serde_json::Value::String(value.to_owned()));
    }
    (serde_json::Value::Object(object).to_string(), truncated)
}

impl wit::Host for &mut LogCtx {
    async fn emit(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<Field>,
    ) -> wasmtime::Result<()> {
        if !is_enabled(level) {
            return Ok(());
        }
        if self.emitted >= MAX_EVENTS_PER_INSTANCE {
            self.dropped = self.dropped.saturating_add(1);
            if self.dropped == 1 {
                // Said once, so that the limit itself cannot flood the log.
                tracing::warn!(
                    target: GUEST_TARGET,
                    component = &*self.component,
                    request_id = &*self.request_id,
                    limit = MAX_EVENTS_PER_INSTANCE,
                    "the guest reached its event limit; its later events are dropped"
                );
            }
            return Ok(());
        }
        self.emitted += 1;
        let (message, message_cut) = cut(&message, MAX_MESSAGE_BYTES);
        let (fields, fields_cut) = render_fields(&fields);
        let truncated = fields_cut + usize::from(message_cut);
        let component = &*self.component;
        let request_id = &*self.request_id;
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: GUEST_TARGET,
                    $level,
                    component,
                    request_id,
                    fields = %fields,
                    truncated,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => event!(tracing::Level::TRACE),
            Level::Debug => event!(tracing::Level::DEBUG),
            Level::Info => event!(tracing::Level::INFO),
            Level::Warn => event!(tracing::Level::WARN),
            Level::Error => event!(tracing::Level::ERROR),
        }
        Ok(())
    }

    async fn enabled(&mut self, level: Level) -> wasmtime::Result<bool> {
        Ok(is_enabled(level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit::Host;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(cut("héllo", 2), ("h", true));
        assert_eq!(cut("hello", 10), ("hello", false));
    }

    #[test]
    fn fields_are_bounded() {
        let many: Vec<Field> = (0..40)
            .map(|i| Field {
                key: format!("k{i}"),
                value: "v".repeat(if i == 0 { 2000 } else { 1 }),
            })
            .collect();
        let (json, truncated) = render_fields(&many);
        let parsed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.len(), MAX_FIELDS);
        assert_eq!(parsed["k0"].as_str().unwrap().len(), MAX_VALUE_BYTES);
        assert_eq!(truncated, 8 + 1);
    }

    #[tokio::test]
    async fn an_instance_may_emit_only_so_many_events() {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let mut ctx = LogCtx::new("c".into(), "r".into());
        let mut view = &mut ctx;
        for _ in 0..MAX_EVENTS_PER_INSTANCE + 5 {
            view.emit(Level::Info, "hi".into(), Vec::new())
                .await
                .unwrap();
        }
        assert!(!view.enabled(Level::Debug).await.unwrap());
        assert_eq!(ctx.dropped(), 5);
    }
}
