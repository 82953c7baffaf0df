//! The nexus host: a wasmtime embedding that serves the components of a Spin manifest.
//!
//! Each capability is a module with its own context, limits and backends (`redis`,
//! `postgres`, `outbound_http`, `variables`, `log`, `websocket`); `engine` wires them into one linker,
//! `schedule` and `queue` (durable jobs) drive components from timers and from PostgreSQL,
//! `server` serves HTTP with a fresh instance per request, `tenant` runs tenants' own bots and
//! transforms in a sandbox of their own, and `platform` provides the
//! Redis and PostgreSQL the host runs on (real servers, or embedded stand-ins); `tls` is the one
//! TLS client stack of the host's own connections; `telemetry` exports OpenTelemetry traces when
//! configured.
#![forbid(unsafe_code)]

pub mod allowed_hosts;
pub mod bindings;
pub mod budget;
pub mod build;
pub mod component_cli;
pub mod demo;
pub mod engine;
pub mod log;
pub mod loopback;
pub mod manifest;
pub mod metrics;
pub mod migrate;
pub mod outbound_http;
pub mod parking;
pub mod platform;
pub mod postgres;
pub mod queue;
pub mod redis;
pub mod routes;
pub mod schedule;
pub mod server;
pub mod telemetry;
pub mod tenant;
pub mod tls;
pub mod variables;
pub mod websocket;
