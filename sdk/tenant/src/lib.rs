//! Write a nexus tenant component in Rust: a bot (it takes the turns of conversations) or a
//! transform (it sees each message on a channel before nexus stores it).
//!
//! ```ignore
//! use nexus_tenant::{Action, Bot, Turn};
//!
//! struct Hello;
//!
//! impl Bot for Hello {
//!     fn handle(turn: Turn) -> Result<Vec<Action>, String> {
//!         Ok(vec![Action::Reply(format!("Hello, {}!", turn.conversation.customer_nickname))])
//!     }
//! }
//!
//! nexus_tenant::export_bot!(Hello);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (`crate-type = ["cdylib"]`),
//! test it with `nexus-testing`, upload it with `nexus component push`. What it may import is
//! the `nexus:tenant` world's (`wit/tenant/tenant.wit`): clocks, random, outbound HTTP to the
//! hosts the tenant granted it ([`http`]), the tenant's key-value store ([`kv`]) and the log
//! ([`log`]).
// The bindings generator writes the component's ABI glue, which is unsafe code.
#![allow(unsafe_code)]

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/tenant",
        world: "nexus:tenant/imports",
        generate_all,
        // The types are the exports' (turns, actions, messages): no import uses them.
        generate_unused_types: true,
    });
}

pub mod http;
pub mod kv;
pub mod log;

pub use bindings::nexus::tenant::types::{
    Action, Conversation, CustomerMessage, Direction, Handoff, Message, Question, Turn, TurnEvent,
    UserDataChange, UserDataEntry,
};

/// A bot: the actions it takes for a turn, or why it takes none (the conversation then goes to
/// routing, with the reason for the agent).
pub trait Bot {
    fn handle(turn: Turn) -> Result<Vec<Action>, String>;
}

/// A transform: the message's text as it should be (changed or not), or why it is refused.
pub trait Transform {
    fn apply(message: Message) -> Result<String, String>;
}

impl Conversation {
    /// The user-data value of `key`, if there is one.
    pub fn user_data(&self, key: &str) -> Option<&str> {
        self.user_data
            .iter()
            .find(|entry| entry.key == key)
            .map(|entry| entry.value.as_str())
    }
}

impl Turn {
    /// What the customer wrote in this turn, oldest first, one text.
    pub fn text(&self) -> String {
        self.messages
            .iter()
            .map(|message| message.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What the export macros expand to refer to; not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::nexus::tenant::{key_value, log, types};
    pub use crate::bindings::wasi;
    pub use wit_bindgen;
}

include!(concat!(env!("OUT_DIR"), "/export_macros.rs"));
