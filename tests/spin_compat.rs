//! The Spin promise, checked on the built components: every component that this repository's
//! `spin.toml` serves over HTTP imports only interfaces that Spin offers a component, in versions
//! Spin 3.4 already has (the README says "Spin 3.4 or later"), and exports the WASI HTTP handler
//! Spin calls. A component that started to import a nexus-only interface (`nexus:platform/*`,
//! `nexus:websocket/*`), or a WASI newer than Spin links, fails here instead of at `spin up`.
//!
//! The table below is written from Spin v3.6.3's `wit/world.wit` (world `platform`, which every
//! Spin 3.x `http-trigger` world includes) and the `wit/deps` packages it names, with the Spin
//! release that first offered each. Exports beyond the handler (`nexus:platform/parking`) are
//! allowed: Spin never calls them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use nexus_host::manifest::Manifest;
use wasmparser::{Parser, Payload};

/// The Spin release the README promises (major, minor).
const PROMISED: (u32, u32) = (3, 4);

/// A package of interfaces Spin offers, at which versions, since which Spin release.
struct Offered {
    package: &'static str,
    interfaces: &'static [&'static str],
    /// Versions, each with the Spin release that first offered it.
    versions: &'static [(&'static str, (u32, u32))],
}

/// WASI 0.2 up to the newest Spin 3.6 defines. Spin's linker (wasmtime's, semver-aware since
/// wasmtime 19) resolves an import of any 0.2.x to the 0.2 definitions it has, as long as the
/// component uses only what those define; every interface below exists since 0.2.0, which
/// every Spin 3.x offers. (Rust's standard library for wasm32-wasip2 imports 0.2.6.)
const WASI_0_2: &[(&str, (u32, u32))] = &[
    ("0.2.0", (3, 0)),
    ("0.2.1", (3, 0)),
    ("0.2.2", (3, 0)),
    ("0.2.3", (3, 0)),
    ("0.2.4", (3, 0)),
    ("0.2.5", (3, 0)),
    ("0.2.6", (3, 0)),
];

const OFFERED: &[Offered] = &[
    Offered {
        package: "wasi:cli",
        interfaces: &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
        versions: WASI_0_2,
    },
    Offered {
        package: "wasi:clocks",
        interfaces: &["monotonic-clock", "wall-clock"],
        versions: WASI_0_2,
    },
    Offered {
        package: "wasi:filesystem",
        interfaces: &["types", "preopens"],
        versions: WASI_0_2,
    },
    Offered {
        package: "wasi:io",
        interfaces: &["error", "poll", "streams"],
        versions: WASI_0_2,
    },
    Offered {
        package: "wasi:random",
        interfaces: &["random", "insecure", "insecure-seed"],
        versions: WASI_0_2,
    },
    Offered {
        package: "wasi:sockets",
        interfaces: &[
            "network",
            "instance-network",
            "udp",
            "udp-create-socket",
            "tcp",
            "tcp-create-socket",
            "ip-name-lookup",
        ],
        versions: WASI_0_2,
    },
    // A component sends HTTP; it does not serve it through an import.
    Offered {
        package: "wasi:http",
        interfaces: &["types", "outgoing-handler"],
        versions: WASI_0_2,
    },
    Offered {
        package: "fermyon:spin",
        interfaces: &[
            "llm",
            "redis",
            "mqtt",
            "postgres",
            "mysql",
            "sqlite",
            "key-value",
            "variables",
            "rdbms-types",
        ],
        versions: &[("2.0.0", (3, 0))],
    },
    Offered {
        package: "spin:postgres",
        interfaces: &["postgres"],
        versions: &[("3.0.0", (3, 0)), ("4.0.0", (3, 4))],
    },
    Offered {
        package: "spin:sqlite",
        interfaces: &["sqlite"],
        versions: &[("3.0.0", (3, 2))],
    },
    Offered {
        package: "wasi:keyvalue",
        interfaces: &["store", "atomics", "batch"],
        versions: &[("0.2.0-draft2", (3, 0))],
    },
    Offered {
        package: "wasi:config",
        interfaces: &["store"],
        versions: &[("0.2.0-draft-2024-09-27", (3, 0))],
    },
];

/// The Spin release that first offers `import` (`package/interface@version`), or why none does.
fn spin_offers(import: &str) -> Result<(u32, u32), String> {
    let (path, version) = import.split_once('@').ok_or_else(|| {
        format!("{import}: unversioned, and Spin 3.x names every interface's version")
    })?;
    let (package, interface) = path
        .split_once('/')
        .ok_or_else(|| format!("{import}: not an interface of a package"))?;
    let offered = OFFERED
        .iter()
        .find(|offered| offered.package == package)
        .ok_or_else(|| format!("{import}: Spin offers no package {package}"))?;
    if !offered.interfaces.contains(&interface) {
        return Err(format!(
            "{import}: Spin's {package} has no interface {interface}"
        ));
    }
    offered
        .versions
        .iter()
        .find(|(offered_version, _)| *offered_version == version)
        .map(|(_, since)| *since)
        .ok_or_else(|| {
            format!(
                "{import}: Spin offers {package} only at {:?}",
                offered.versions
            )
        })
}

/// A component's own imports and exports (not those of the modules and components inside it).
fn interfaces(wasm: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("a well-formed component") {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(import.expect("an import").name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(export.expect("an export").name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

fn manifest() -> Manifest {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
    Manifest::load(&path).expect("spin.toml loads")
}

#[test]
fn every_http_component_of_spin_toml_imports_only_what_spin_offers() {
    let manifest = manifest();
    let mut served: Vec<&str> = manifest
        .http_triggers
        .iter()
        .map(|trigger| trigger.component.as_str())
        .collect();
    served.sort_unstable();
    served.dedup();
    assert!(served.len() >= 10, "spin.toml serves {served:?}");
    let mut problems = Vec::new();
    let mut needs = (0, 0);
    for component in &served {
        let path = manifest
            .component_path(component)
            .expect("a local component");
        let wasm = std::fs::read(&path).unwrap_or_else(|err| {
            panic!(
                "{component}: cannot read {} ({err}); build the components first (scripts/build-components.sh)",
                path.display()
            )
        });
        let (imports, exports) = interfaces(&wasm);
        assert!(!imports.is_empty(), "{component}: no imports read");
        for import in &imports {
            match spin_offers(import) {
                Ok(since) => needs = needs.max(since),
                Err(problem) => problems.push(format!("{component}: {problem}")),
            }
        }
        let handler = exports
            .iter()
            .any(|export| export.starts_with("wasi:http/incoming-handler@0.2."));
        if !handler {
            problems.push(format!(
                "{component}: exports no wasi:http/incoming-handler@0.2.x (it exports {exports:?})"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "not servable by Spin:\n{}",
        problems.join("\n")
    );
    assert!(
        needs <= PROMISED,
        "the components need Spin {}.{}, newer than the {}.{} the README promises",
        needs.0,
        needs.1,
        PROMISED.0,
        PROMISED.1
    );
}

/// The check itself: it refuses what Spin lacks, so that the test above can fail.
#[test]
fn the_check_refuses_what_spin_lacks() {
    assert_eq!(spin_offers("wasi:io/streams@0.2.0"), Ok((3, 0)));
    assert_eq!(spin_offers("spin:postgres/postgres@4.0.0"), Ok((3, 4)));
    for lacking in [
        "nexus:platform/parking@0.1.0",
        "nexus:websocket/connections@0.1.0",
        "wasi:http/incoming-handler@0.2.0",
        "wasi:io/streams@0.2.12",
        "wasi:io/streams@0.3.0",
        "fermyon:spin/redis",
        "spin:postgres/postgres@5.0.0",
    ] {
        assert!(spin_offers(lacking).is_err(), "{lacking} passed");
    }
    // A nexus-only component of this repository is refused, through the same reading.
    let limits =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/components/limits/Cargo.toml");
    assert!(limits.exists(), "the fixture's crate moved");
    let manifest = manifest();
    let example = manifest
        .component_path("example")
        .expect("the example component");
    let fixture = example.with_file_name("nexus_fixture_limits.wasm");
    let wasm = std::fs::read(&fixture).unwrap_or_else(|err| {
        panic!(
            "cannot read {} ({err}); build the components first",
            fixture.display()
        )
    });
    let (imports, _) = interfaces(&wasm);
    let refused: Vec<&String> = imports
        .iter()
        .filter(|import| spin_offers(import).is_err())
        .collect();
    assert!(
        refused
            .iter()
            .any(|import| import.starts_with("nexus:platform/")),
        "the limits fixture imports nexus:platform, yet the check passed {imports:?}"
    );
}
