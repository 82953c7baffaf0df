//! Host bindings for the interfaces the host implements beyond WASI (which wasmtime-wasi and
//! wasmtime-wasi-http provide): Spin's redis, variables and postgres, nexus's own log, and the
//! socket-handler world of `nexus:websocket` (its `connections` import, its `handler` export).
//!
//! Every import is async (the backends are network clients) and trappable: a host failure
//! traps the guest, while a guest-visible failure is the interface's own `error` value.

wasmtime::component::bindgen!({
    inline: "
        package nexus:host-bindings;
        world capabilities {
            import fermyon:spin/redis@2.0.0;
            import fermyon:spin/variables@2.0.0;
            import spin:postgres/postgres@4.0.0;
            import nexus:platform/log@0.1.0;
        }
    ",
    path: "../wit",
    world: "nexus:host-bindings/capabilities",
    imports: { default: async | trappable },
    additional_derives: [PartialEq],
    with: {
        "fermyon:spin/redis.connection": crate::redis::RedisConnection,
        "spin:postgres/postgres.connection": crate::postgres::PgConnection,
    },
});

/// `nexus:websocket`: its own package under `wit/websocket`, with no dependencies.
pub mod websocket {
    wasmtime::component::bindgen!({
        path: "../wit/websocket",
        world: "nexus:websocket/socket-handler",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// `nexus:tenant`: the worlds of tenant components (`wit/tenant`). The WASI interfaces they
/// import are wasmtime's own implementations; the bot's bindings own the interfaces that both
/// worlds share (types, key-value, log), and the transform's reuse them.
pub mod tenant {
    pub mod bot {
        wasmtime::component::bindgen!({
            path: "../wit/tenant",
            world: "nexus:tenant/bot",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "wasi": wasmtime_wasi::p2::bindings,
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            },
        });
    }

    pub mod transform {
        wasmtime::component::bindgen!({
            path: "../wit/tenant",
            world: "nexus:tenant/transform",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "wasi": wasmtime_wasi::p2::bindings,
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "nexus:tenant/types": super::bot::nexus::tenant::types,
                "nexus:tenant/key-value": super::bot::nexus::tenant::key_value,
                "nexus:tenant/log": super::bot::nexus::tenant::log,
            },
        });
    }
}

/// `nexus:platform/parking`: exported by HTTP components whose requests may park
/// (`wit/parking.wit`).
pub mod parking {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "nexus:platform/parkable",
        exports: { default: async },
    });
}
