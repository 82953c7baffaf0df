//! What a tenant component must be to be accepted: the rules that the host (at upload and at
//! every load), provisioning (at upload) and the test harness (`nexus-testing`, in a tenant's own
//! `cargo test`) all apply, kept in one place so that a component that passes its tests is not
//! refused at upload.

/// The largest component an upload may carry, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 8 << 20;

/// The longest key of the tenant key-value store, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The largest value of the tenant key-value store, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Events one call may log.
pub const MAX_LOG_EVENTS: u32 = 100;
/// A logged message is cut to this many bytes.
pub const MAX_LOG_MESSAGE_BYTES: usize = 2048;

/// What a tenant component's imports may be, by prefix: the `nexus:tenant` world's, and the WASI
/// interfaces Rust's standard library links (which the host provides empty: no files, no
/// environment, no arguments).
pub const ALLOWED_IMPORTS: &[&str] = &[
    "nexus:tenant/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:io/",
    "wasi:http/types@",
    "wasi:http/outgoing-handler@",
    "wasi:cli/environment@",
    "wasi:cli/exit@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:cli/terminal-",
    "wasi:filesystem/types@",
    "wasi:filesystem/preopens@",
];

/// Checks a component's import names: `Err` names the ones a tenant component may not have.
pub fn check_imports<'a>(imports: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let refused: Vec<&str> = imports
        .into_iter()
        .filter(|name| {
            !ALLOWED_IMPORTS
                .iter()
                .any(|allowed| name.starts_with(allowed))
        })
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the component imports {}, which tenant components may not use (they may import \
         clocks, random, outbound HTTP, nexus:tenant/log and nexus:tenant/key-value)",
        refused.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_sockets_spin_and_platform_imports() {
        assert!(
            check_imports([
                "nexus:tenant/key-value@0.1.0",
                "wasi:http/outgoing-handler@0.2.12",
                "wasi:cli/stdout@0.2.12",
            ])
            .is_ok()
        );
        let err = check_imports([
            "wasi:clocks/wall-clock@0.2.12",
            "wasi:sockets/tcp@0.2.12",
            "fermyon:spin/redis@2.0.0",
            "nexus:platform/log@0.1.0",
        ])
        .unwrap_err();
        assert!(
            err.contains(
                "wasi:sockets/tcp@0.2.12, fermyon:spin/redis@2.0.0, nexus:platform/log@0.1.0"
            ),
            "{err}"
        );
        assert!(!err.contains("wall-clock"), "{err}");
    }
}
