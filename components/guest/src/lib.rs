//! What nexus's components share: the `{status:{code,message}, data}` envelope and its status
//! codes, credentials (API keys, secrets, HS256 client tokens), request bodies in the widgets'
//! form encoding or JSON, and, inside a component, helpers over Spin's PostgreSQL and Redis.
//!
//! Everything but [`spin`] is plain Rust and unit-tested natively (`cargo test -p nexus-guest`).

pub mod agent_token;
pub mod api;
pub mod body;
pub mod bot_contract;
pub mod consent;
pub mod contacts;
pub mod csv_lines;
pub mod hours;
pub mod identity;
pub mod jobs;
pub mod media;
pub mod phone_zones;
pub mod private_address;
pub mod sealed;
pub mod secrets;
pub mod socket;
pub mod template;
pub mod tenant_contract;
pub mod timestamp;
pub mod token;
pub mod webhook_signature;

#[cfg(target_arch = "wasm32")]
pub mod api_key;
#[cfg(target_arch = "wasm32")]
pub mod at_rest;
#[cfg(target_arch = "wasm32")]
pub mod bot_leg;
#[cfg(target_arch = "wasm32")]
pub mod campaign_send;
#[cfg(target_arch = "wasm32")]
pub mod chat_auth;
#[cfg(target_arch = "wasm32")]
pub mod conversation;
#[cfg(target_arch = "wasm32")]
pub mod events;
#[cfg(target_arch = "wasm32")]
pub mod inbound;
#[cfg(target_arch = "wasm32")]
pub mod live;
#[cfg(target_arch = "wasm32")]
pub mod outbound;
#[cfg(target_arch = "wasm32")]
pub mod parking;
#[cfg(target_arch = "wasm32")]
pub mod routing;
#[cfg(target_arch = "wasm32")]
pub mod spin;
#[cfg(target_arch = "wasm32")]
pub mod streamed_body;
#[cfg(target_arch = "wasm32")]
pub mod sweep;
#[cfg(target_arch = "wasm32")]
pub mod tenant_components;
