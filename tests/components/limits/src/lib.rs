//! A component that misbehaves on purpose, for the host's limit tests, and that imports nexus's
//! own `log` interface (so it runs only under the nexus host).
//!
//! - `/limits/spin`       loops forever: the host's CPU deadline must stop it
//! - `/limits/alloc`      allocates without end: the host's memory cap must stop it
//! - `/limits/sleep?ms=N` sleeps N ms without burning CPU, then answers
//! - `/limits/log`        emits structured events through `nexus:platform/log`
//! - `/limits/ok`         answers at once
// The export macros of spin-sdk and wit-bindgen generate the unsafe ABI glue of the component.
#![allow(unsafe_code)]
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "nexus:platform/extras",
    generate_all,
});

use nexus::platform::log;

/// Serves `/limits/...`.
#[http_component]
fn limits(req: Request) -> anyhow::Result<impl IntoResponse> {
    let path_info = req
        .header("spin-path-info")
        .and_then(|h| h.as_str())
        .unwrap_or("/")
        .to_owned();
    match path_info.as_str() {
        "/spin" => spin_forever(),
        "/alloc" => allocate_forever(),
        "/sleep" => {
            let ms = req
                .query()
                .strip_prefix("ms=")
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(100);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(text(200, &format!("slept {ms} ms\n")))
        }
        "/log" => {
            let enabled = log::enabled(log::Level::Debug);
            log::emit(
                log::Level::Info,
                "fixture says hello",
                &[log::Field {
                    key: "answer".into(),
                    value: "42".into(),
                }],
            );
            Ok(text(200, &format!("logged; debug enabled: {enabled}\n")))
        }
        "/ok" => Ok(text(200, "ok\n")),
        other => Ok(text(404, &format!("no route {other}\n"))),
    }
}

fn spin_forever() -> anyhow::Result<Response> {
    let mut counter: u64 = 0;
    loop {
        // black_box keeps the optimiser from proving the loop pointless and removing it.
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn allocate_forever() -> anyhow::Result<Response> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page, so the memory is really committed and not just reserved.
        hoard.push(vec![0xAB; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

fn text(status: u16, body: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .build()
}
