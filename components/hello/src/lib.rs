//! The smallest useful HTTP component: it answers every request with a fixed greeting. The load
//! benchmarks in `bench/` serve it under `nexus up`, `wasmtime serve` and a native server alike.
// The export macros of spin-sdk and wit-bindgen generate the unsafe ABI glue of the component.
#![allow(unsafe_code)]
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

/// Serves every route it is mounted on.
#[http_component]
fn hello(_req: Request) -> anyhow::Result<impl IntoResponse> {
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("Hello, nexus!\n")
        .build())
}
