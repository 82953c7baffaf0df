//! Embeds web/dist (built by scripts/build-web.sh) into the component: a table of every file,
//! with its gzip twin, content type and entity tag, in `$OUT_DIR/assets.rs`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type BuildResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BuildResult<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let dist = manifest_dir.join("../../web/dist");
    println!("cargo::rerun-if-changed={}", dist.display());
    if !dist.join("widget/nexus-chat.js").is_file() {
        return Err(format!(
            "{} has no built widget: run scripts/build-web.sh first (scripts/build-components.sh does)",
            dist.display()
        )
        .into());
    }
    let mut files = Vec::new();
    collect(&dist, &mut files)?;
    files.sort();
    let mut table = String::from("static ASSETS: &[Asset] = &[\n");
    for path in &files {
        let relative = path
            .strip_prefix(&dist)?
            .to_str()
            .ok_or("a file name of web/dist is not UTF-8")?
            .replace('\\', "/");
        let gzipped = PathBuf::from(format!("{}.gz", path.display()));
        if !gzipped.is_file() {
            return Err(format!(
                "{} has no gzip twin: rebuild with scripts/build-web.sh",
                path.display()
            )
            .into());
        }
        println!("cargo::rerun-if-changed={}", path.display());
        println!("cargo::rerun-if-changed={}", gzipped.display());
        let body = std::fs::read(path)?;
        writeln!(
            table,
            "    Asset {{ path: {relative:?}, content_type: {:?}, etag: \"\\\"{:016x}\\\"\", body: include_bytes!({:?}), gzip: include_bytes!({:?}) }},",
            content_type(&relative),
            fnv1a(&body),
            path.canonicalize()?,
            gzipped.canonicalize()?,
        )?;
    }
    table.push_str("];\n");
    std::fs::write(
        PathBuf::from(std::env::var("OUT_DIR")?).join("assets.rs"),
        table,
    )?;
    Ok(())
}

/// Every file under `dir` but the gzip twins.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> BuildResult<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_none_or(|extension| extension != "gz") {
            files.push(path);
        }
    }
    Ok(())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// FNV-1a, 64 bits: an entity tag that changes with the content (not a security property).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
