//! Host-side bindings of the interfaces the fakes implement: Spin's redis, variables and
//! postgres and nexus's log (what nexus's own components import beyond WASI), and the
//! `nexus:tenant` worlds (what tenant components import and export).

/// nexus's components: Spin's capabilities and nexus's log.
pub mod platform {
    wasmtime::component::bindgen!({
        inline: "
            package nexus:testing-bindings;
            world capabilities {
                import fermyon:spin/redis@2.0.0;
                import fermyon:spin/variables@2.0.0;
                import spin:postgres/postgres@4.0.0;
                import nexus:platform/log@0.1.0;
            }
        ",
        path: "../../wit",
        world: "nexus:testing-bindings/capabilities",
        imports: { default: async | trappable },
        additional_derives: [PartialEq],
        with: {
            "fermyon:spin/redis.connection": crate::redis::RedisConnection,
            "spin:postgres/postgres.connection": crate::postgres::PgConnection,
        },
    });
}

/// Tenant components: the `bot` world (which owns the interfaces both worlds share) and the
/// `transform` world.
pub mod tenant {
    pub mod bot {
        wasmtime::component::bindgen!({
            path: "../../wit/tenant",
            world: "nexus:tenant/bot",
            imports: { default: async | trappable },
            exports: { default: async },
            additional_derives: [PartialEq, Eq],
            with: {
                "wasi": wasmtime_wasi::p2::bindings,
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            },
        });
    }

    pub mod transform {
        wasmtime::component::bindgen!({
            path: "../../wit/tenant",
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
