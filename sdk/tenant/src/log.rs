//! The log: events go to nexus's log stream, marked with the tenant, the component and its
//! version (at most 100 per call, each cut at 2048 bytes).

use crate::bindings::nexus::tenant::log as wit;
pub use crate::bindings::nexus::tenant::log::Level;

pub fn debug(message: &str) {
    wit::emit(Level::Debug, message);
}

pub fn info(message: &str) {
    wit::emit(Level::Info, message);
}

pub fn warn(message: &str) {
    wit::emit(Level::Warn, message);
}

pub fn error(message: &str) {
    wit::emit(Level::Error, message);
}
