//! The log fake: what a component logged, through `nexus:platform/log` (nexus's components),
//! `nexus:tenant/log` (tenant components) or its stdout and stderr, in order.

use std::sync::{Arc, Mutex};

use nexus_guest::tenant_contract::{MAX_LOG_EVENTS, MAX_LOG_MESSAGE_BYTES};
use wasmtime::component::HasData;

use crate::bindings::platform::nexus::platform::log as platform;
use crate::bindings::tenant::bot::nexus::tenant::log as tenant;
use crate::lock;

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// `trace`, `debug`, `info`, `warn`, `error`; `stdout` or `stderr` for what the component
    /// printed.
    pub level: String,
    pub message: String,
    /// The event's fields (`nexus:platform/log` only).
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
struct Record {
    entries: Vec<LogEntry>,
    /// Tenant events in the current call (the host keeps at most [`MAX_LOG_EVENTS`]).
    tenant_events: u32,
}

/// The log fake. Clones share one record.
#[derive(Clone, Default)]
pub struct FakeLog {
    record: Arc<Mutex<Record>>,
}

impl FakeLog {
    /// Everything logged so far, oldest first.
    pub fn entries(&self) -> Vec<LogEntry> {
        lock(&self.record).entries.clone()
    }

    /// The messages logged so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        lock(&self.record)
            .entries
            .iter()
            .map(|entry| entry.message.clone())
            .collect()
    }

    pub(crate) fn push(&self, level: &str, message: String, fields: Vec<(String, String)>) {
        lock(&self.record).entries.push(LogEntry {
            level: level.to_owned(),
            message,
            fields,
        });
    }

    /// A tenant call starts: its event budget is full again.
    pub(crate) fn start_call(&self) {
        lock(&self.record).tenant_events = 0;
    }

    /// What a call printed, one entry per line.
    pub(crate) fn push_output(&self, stream: &str, output: &[u8]) {
        for line in String::from_utf8_lossy(output).lines() {
            if !line.trim().is_empty() {
                self.push(stream, line.to_owned(), Vec::new());
            }
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The `HasData` marker that gives the bindings a [`FakeLog`].
pub struct LogCapability;

impl HasData for LogCapability {
    type Data<'a> = &'a FakeLog;
}

impl platform::Host for &FakeLog {
    async fn emit(
        &mut self,
        level: platform::Level,
        message: String,
        fields: Vec<platform::Field>,
    ) -> wasmtime::Result<()> {
        let level = match level {
            platform::Level::Trace => "trace",
            platform::Level::Debug => "debug",
            platform::Level::Info => "info",
            platform::Level::Warn => "warn",
            platform::Level::Error => "error",
        };
        let fields = fields
            .into_iter()
            .map(|field| (field.key, field.value))
            .collect();
        self.push(level, message, fields);
        Ok(())
    }

    async fn enabled(&mut self, _level: platform::Level) -> wasmtime::Result<bool> {
        // Every level, so that a test sees every event.
        Ok(true)
    }
}

impl tenant::Host for &FakeLog {
    async fn emit(&mut self, level: tenant::Level, message: String) -> wasmtime::Result<()> {
        {
            let mut record = lock(&self.record);
            if record.tenant_events >= MAX_LOG_EVENTS {
                // As the host: the events past the budget are dropped.
                return Ok(());
            }
            record.tenant_events += 1;
        }
        let level = match level {
            tenant::Level::Debug => "debug",
            tenant::Level::Info => "info",
            tenant::Level::Warn => "warn",
            tenant::Level::Error => "error",
        };
        self.push(level, cut(&message, MAX_LOG_MESSAGE_BYTES), Vec::new());
        Ok(())
    }
}
