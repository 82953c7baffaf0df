//! Parked waits (`nexus:platform/parking`, see `wit/parking.wit`): under the nexus host, a
//! long-poll with nothing to answer parks the request and returns, and the host calls the
//! component again when a topic it waits on is published to or its deadline passes. Under Spin
//! nothing calls [`begin`], [`call`] is `None`, and the component waits by itself.
//!
//! A component that uses it exports the interface (`nexus_guest::export_parking!()`) and
//! answers through [`respond`], which sends nothing for a parked request.

use std::sync::Mutex;

use spin_sdk::http::{Response, ResponseOutparam};

/// Exports `nexus:platform/parking` from the calling component, backed by this module. The
/// component depends on `wit-bindgen` and lives in `components/<name>` (the WIT is found at
/// `../../wit`). Only components that call it export the interface: the bindings live in each
/// such component rather than here, where every component would declare the export.
#[macro_export]
macro_rules! export_parking {
    () => {
        mod parking_export {
            wit_bindgen::generate!({
                path: "../../wit",
                world: "nexus:platform/parkable",
            });

            use exports::nexus::platform::parking::{Call, Guest, Park, Wake};

            struct Parking;

            impl Guest for Parking {
                fn begin(call: Call) {
                    $crate::parking::begin($crate::parking::Call {
                        wake: match call.wake {
                            Wake::First => $crate::parking::Wake::First,
                            Wake::Published => $crate::parking::Wake::Published,
                            Wake::Deadline => $crate::parking::Wake::Deadline,
                        },
                        deadline_ms: call.deadline_ms,
                        memo: call.memo,
                    });
                }

                fn parked() -> Option<Park> {
                    $crate::parking::take_parked().map(|park| Park {
                        topics: park.topics,
                        deadline_ms: park.deadline_ms,
                        memo: park.memo,
                    })
                }
            }

            export!(Parking);
        }
    };
}

/// Why the host calls the handler this time (the interface's `wake`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    First,
    Published,
    Deadline,
}

/// What the host said before this call (the interface's `call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub wake: Wake,
    pub deadline_ms: Option<u64>,
    pub memo: Option<String>,
}

/// What the handler waits for (the interface's `park`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Park {
    pub topics: Vec<String>,
    pub deadline_ms: u64,
    pub memo: String,
}

/// The most topics one park may name (the host's limit).
pub const MAX_TOPICS: usize = 16;
/// The largest memo (the host's limit).
pub const MAX_MEMO_BYTES: usize = 4096;

/// This instance's call, and the park its handler asked for. One request per instance.
struct State {
    call: Option<Call>,
    parked: Option<Park>,
}

static STATE: Mutex<State> = Mutex::new(State {
    call: None,
    parked: None,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The export's `begin`.
pub fn begin(call: Call) {
    let mut state = state();
    state.call = Some(call);
    state.parked = None;
}

/// The export's `parked`.
pub fn take_parked() -> Option<Park> {
    state().parked.take()
}

/// Why the host called the handler, when the host parks requests (`None` under Spin, where the
/// handler must wait by itself).
pub fn call() -> Option<Call> {
    state().call.clone()
}

/// Parks the request: the handler then returns, and [`respond`] sends nothing. Allowed only
/// when [`call`] is `Some` and not a [`Wake::Deadline`] call (the caller checks).
pub fn park(topics: Vec<String>, deadline_ms: u64, memo: String) {
    state().parked = Some(Park {
        topics,
        deadline_ms,
        memo,
    });
}

/// Whether the handler parked this request.
pub fn is_parked() -> bool {
    state().parked.is_some()
}

/// Milliseconds since the Unix epoch, the clock of deadlines.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Sends `response` through `out`, unless the handler parked the request: then `out` is dropped
/// unset, which tells the host to ask what it parked on.
pub async fn respond(out: ResponseOutparam, response: Response) {
    if is_parked() {
        return;
    }
    crate::streamed_body::send(out, response).await;
}
