//! The host programs the testbed drives, and which Debian package provides each.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Programs the testbed runs from `PATH`, each with the Debian package that provides it.
/// `containerd` and `ctr` come from there too unless `$SPEGEL_TEST_CONTAINERD` names
/// another build (see [`crate::containerd::Build`]).
const TOOLS: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
];

/// Checks that `containerd`, `ctr`, `docker-registry` and `skopeo` can be run, and that
/// the containerd build to test answers `--version`.
///
/// The error names the missing programs and the Debian packages to install.
pub fn require_root_tools() -> Result<()> {
    let own_build = std::env::var_os(crate::containerd::CONTAINERD_ENV).is_some();
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(_, package)| !(own_build && *package == "containerd"))
        .filter(|(program, _)| find_on_path(program).is_none())
        .map(|(program, package)| format!("{program} (apt-get install {package})"))
        .collect();
    if !missing.is_empty() {
        bail!("missing programs: {}", missing.join(", "));
    }
    crate::containerd::Build::current()?;
    Ok(())
}

/// The first executable file called `program` in the directories of `PATH`.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_on_path_finds_sh() {
        assert!(find_on_path("sh").is_some());
    }

    #[test]
    fn find_on_path_does_not_invent_programs() {
        assert!(find_on_path("spegel-testbed-no-such-program").is_none());
    }
}
