//! Host bindings for the interfaces the host implements beyond WASI (which wasmtime-wasi and
//! wasmtime-wasi-http provide): Spin's redis, variables and postgres, and nexus's own log.
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
