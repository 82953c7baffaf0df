//! Writes the `export_bot!` and `export_transform!` macros with the absolute path of the
//! `nexus:tenant` WIT, so that a tenant's crate (wherever it is) generates the export side of
//! its world from this crate's copy of the WIT, and takes every import from this crate.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let wit = manifest_dir.join("../../wit/tenant");
    let wit = wit.canonicalize().unwrap_or(wit);
    println!("cargo:rerun-if-changed={}", wit.display());
    let wit = wit
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let mut macros = String::new();
    for (name, world, doc, trait_name, adapter) in [
        (
            "export_bot",
            "nexus:tenant/bot",
            "a bot: a type that implements [`Bot`]",
            "Bot",
            "impl exports::nexus::tenant::bot_turn::Guest for Adapter {
                fn handle(turn: nexus_tenant::Turn) -> Result<Vec<nexus_tenant::Action>, String> {
                    <$component as nexus_tenant::Bot>::handle(turn)
                }
            }",
        ),
        (
            "export_transform",
            "nexus:tenant/transform",
            "a transform: a type that implements [`Transform`]",
            "Transform",
            "impl exports::nexus::tenant::message_transform::Guest for Adapter {
                fn apply(message: nexus_tenant::Message) -> Result<String, String> {
                    <$component as nexus_tenant::Transform>::apply(message)
                }
            }",
        ),
    ] {
        macros.push_str(&format!(
            r#"
/// Makes this crate's component {doc}.
#[macro_export]
macro_rules! {name} {{
    ($component:ty) => {{
        // Natively, only checked (and so used, for the crate's own unit tests).
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = {{
            fn implements<T: nexus_tenant::{trait_name}>() {{}}
            implements::<$component>
        }};
        // Only in the component: a native build (the crate's own unit tests) has no host to
        // export to, and the export names are not valid native symbols.
        #[cfg(target_arch = "wasm32")]
        mod __nexus_tenant_export {{
            use super::*;
            nexus_tenant::__private::wit_bindgen::generate!({{
                path: "{wit}",
                world: "{world}",
                runtime_path: "nexus_tenant::__private::wit_bindgen::rt",
                with: {{
                    "nexus:tenant/types@0.1.0": nexus_tenant::__private::types,
                    "nexus:tenant/log@0.1.0": nexus_tenant::__private::log,
                    "nexus:tenant/key-value@0.1.0": nexus_tenant::__private::key_value,
                    "wasi:clocks/wall-clock@0.2.12": nexus_tenant::__private::wasi::clocks::wall_clock,
                    "wasi:clocks/monotonic-clock@0.2.12": nexus_tenant::__private::wasi::clocks::monotonic_clock,
                    "wasi:random/random@0.2.12": nexus_tenant::__private::wasi::random::random,
                    "wasi:http/types@0.2.12": nexus_tenant::__private::wasi::http::types,
                    "wasi:http/outgoing-handler@0.2.12": nexus_tenant::__private::wasi::http::outgoing_handler,
                    "wasi:io/poll@0.2.12": nexus_tenant::__private::wasi::io::poll,
                    "wasi:io/error@0.2.12": nexus_tenant::__private::wasi::io::error,
                    "wasi:io/streams@0.2.12": nexus_tenant::__private::wasi::io::streams,
                }},
            }});
            struct Adapter;
            {adapter}
            export!(Adapter with_types_in self);
        }}
    }};
}}
"#
        ));
    }
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("export_macros.rs");
    if let Err(err) = std::fs::write(&out, macros) {
        panic!("cannot write {}: {err}", out.display());
    }
}
