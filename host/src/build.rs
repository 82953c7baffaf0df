//! `nexus build` and `nexus up --build`: runs each component's `[component.NAME.build]`
//! commands, as `spin build` does, so that one command takes a checkout to a running app.

use std::process::Command;

use anyhow::{Context, bail};

use crate::manifest::Manifest;

/// Runs the build commands of every component that has them, in manifest order.
pub fn build_components(manifest: &Manifest) -> anyhow::Result<()> {
    for (name, component) in &manifest.components {
        let Some(build) = &component.build else {
            continue;
        };
        let workdir = match &build.workdir {
            Some(dir) => manifest.dir.join(dir),
            None => manifest.dir.clone(),
        };
        for command in build.command.as_list() {
            eprintln!("building component `{name}`: {command}");
            let status = Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(&workdir)
                .status()
                .with_context(|| format!("cannot run the build command of `{name}`"))?;
            if !status.success() {
                bail!("the build command of component `{name}` failed ({status}): {command}");
            }
        }
    }
    Ok(())
}
