//! A component that misbehaves on purpose, for the host's limit tests, and that imports nexus's
//! own `log` interface (so it runs only under the nexus host).
//!
//! - `/limits/spin`       loops forever: the host's CPU deadline must stop it
//! - `/limits/alloc`      allocates without end: the host's memory cap must stop it
//! - `/limits/sleep?ms=N` sleeps N ms without burning CPU, then answers
//! - `/limits/log`        emits structured events through `nexus:platform/log`
//! - `/limits/ok`         answers at once
//! - `/limits/drip?ms=N`  sends its response headers and a first line, goes on for N ms,
//!   then sends the last line: an instance that lives on after it has answered
// The export macros of spin-sdk and wit-bindgen generate the unsafe ABI glue of the component.
#![allow(unsafe_code)]
use futures::SinkExt;
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "nexus:platform/extras",
    generate_all,
});

use nexus::platform::log;

/// Serves `/limits/...`.
#[http_component]
async fn limits(req: IncomingRequest, out: ResponseOutparam) {
    let path_info = req
        .headers()
        .get("spin-path-info")
        .first()
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_else(|| "/".into());
    let query = req
        .path_with_query()
        .and_then(|p| p.split_once('?').map(|(_, q)| q.to_owned()))
        .unwrap_or_default();
    let ms = query
        .strip_prefix("ms=")
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(100);
    let (status, body) = match path_info.as_str() {
        "/spin" => spin_forever(),
        "/alloc" => allocate_forever(),
        "/sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            (200, format!("slept {ms} ms\n"))
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
            (200, format!("logged; debug enabled: {enabled}\n"))
        }
        "/drip" => {
            let response = text_response(200);
            let mut body = response.take_body();
            out.set(response);
            let _ = body.send(b"first\n".to_vec()).await;
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let _ = body
                .send(format!("last, after {ms} ms\n").into_bytes())
                .await;
            return;
        }
        "/ok" => (200, "ok\n".to_owned()),
        other => (404, format!("no route {other}\n")),
    };
    let _ = out
        .set_with_body(text_response(status), body.into_bytes())
        .await;
}

fn text_response(status: u16) -> OutgoingResponse {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    response
}

fn spin_forever() -> ! {
    let mut counter: u64 = 0;
    loop {
        // black_box keeps the optimiser from proving the loop pointless and removing it.
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn allocate_forever() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page, so the memory is really committed and not just reserved.
        hoard.push(vec![0xAB; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}
