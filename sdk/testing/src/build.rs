//! Building the component under test: `cargo build --release --target wasm32-wasip2` of a crate,
//! from its own test, so that `cargo test` alone tests the component as it will be uploaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};

use crate::lock;

/// Builds the crate whose manifest is in `manifest_dir` for wasm32-wasip2 (release) and gives
/// the path of its `.wasm`. Once per crate and process; Cargo itself skips an up-to-date build.
///
/// It runs the `cargo` that runs the tests, into `nexus-testing/` under the crate's target
/// directory: a directory of its own, so that the component's build never waits on (or
/// undoes, with other features) a build of the workspace's. The crate must be a `cdylib`, and
/// the target installed (`rustup target add wasm32-wasip2`).
pub fn build_component(manifest_dir: impl AsRef<Path>) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let manifest = manifest_dir.as_ref().join("Cargo.toml");
    let built = BUILT.get_or_init(Mutex::default);
    // Held through the build: tests of one crate run in parallel, and one build serves them all.
    let mut built = lock(built);
    if let Some(wasm) = built.get(&manifest) {
        return Ok(wasm.clone());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = target_directory(&cargo, &manifest)?.join("nexus-testing");
    let output = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--lib"])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "cargo build --target wasm32-wasip2 of {} failed (is the target installed? \
             `rustup target add wasm32-wasip2`):\n{}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let wasm = wasm_artifact(&String::from_utf8_lossy(&output.stdout), &manifest)?;
    built.insert(manifest, wasm.clone());
    Ok(wasm)
}

/// The target directory of the workspace of `manifest`, as Cargo sees it.
fn target_directory(cargo: &std::ffi::OsStr, manifest: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .arg("--manifest-path")
        .arg(manifest)
        .output()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "cargo metadata of {} failed:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("cargo metadata printed something that is not JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata named no target directory")
}

/// The `.wasm` Cargo reported for the package of `manifest`, from its JSON messages.
fn wasm_artifact(messages: &str, manifest: &Path) -> anyhow::Result<PathBuf> {
    let manifest = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_owned());
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| {
            message["manifest_path"]
                .as_str()
                .is_some_and(|path| Path::new(path) == manifest)
        })
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|name| name.as_str().map(PathBuf::from))
        .find(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .with_context(|| {
            format!(
                "building {} made no .wasm: is its crate-type \"cdylib\"?",
                manifest.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_wasm_of_the_package() {
        let manifest = Path::new("/repo/bot/Cargo.toml");
        let messages = r#"{"reason":"compiler-artifact","manifest_path":"/repo/dep/Cargo.toml","filenames":["/t/libdep.rlib"]}
not json
{"reason":"compiler-artifact","manifest_path":"/repo/bot/Cargo.toml","filenames":["/t/bot.wasm","/t/libbot.rlib"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            wasm_artifact(messages, manifest).unwrap(),
            PathBuf::from("/t/bot.wasm")
        );
        let err = wasm_artifact("", manifest).unwrap_err();
        assert!(format!("{err:#}").contains("cdylib"), "{err:#}");
    }
}
