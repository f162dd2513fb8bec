//! Which containerd build the testbed runs: Debian 12's on `PATH`, or another release
//! named by `$SPEGEL_TEST_CONTAINERD` (a directory holding `containerd`, `ctr` and
//! `containerd-shim-runc-v2`, as `scripts/install-deps.sh` unpacks 1.7 and 2.1).
//!
//! The build decides the config the testbed writes: version 2 for containerd 1.x, the
//! native version 3 (`io.containerd.cri.v1.images` and friends) for 2.x.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

/// Environment variable naming the directory of the containerd build to run.
pub const CONTAINERD_ENV: &str = "SPEGEL_TEST_CONTAINERD";

/// A containerd release: `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// Reads the version out of `containerd --version`, e.g.
    /// `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3` or
    /// `containerd github.com/containerd/containerd/v2 2.1.9+unknown`.
    pub fn from_version_output(output: &str) -> Result<Self> {
        let word = output
            .split_whitespace()
            .nth(2)
            .with_context(|| format!("no version in {output:?}"))?;
        let digits = word.trim_start_matches('v');
        let end = digits
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(digits.len());
        let mut numbers = digits[..end].split('.').map(str::parse::<u32>);
        let mut next = || {
            numbers
                .next()
                .and_then(|n| n.ok())
                .ok_or_else(|| anyhow!("{word:?} is not a containerd version"))
        };
        Ok(Self {
            major: next()?,
            minor: next()?,
            patch: next()?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The containerd programs of one build and its version.
#[derive(Debug, Clone)]
pub struct Build {
    /// The directory holding the programs; `None`: found on `PATH`.
    bin_dir: Option<PathBuf>,
    version: Version,
}

impl Build {
    /// The build every testbed containerd of this process runs: `$SPEGEL_TEST_CONTAINERD`
    /// if set, else the one on `PATH`. Asked once per process.
    pub fn current() -> Result<&'static Build> {
        static CURRENT: OnceLock<Result<Build, String>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                let dir = std::env::var_os(CONTAINERD_ENV).map(PathBuf::from);
                Build::at(dir.as_deref()).map_err(|error| format!("{error:#}"))
            })
            .as_ref()
            .map_err(|error| anyhow!("{error}"))
    }

    /// The build in `bin_dir` (`None`: on `PATH`), asking its `containerd --version`.
    pub fn at(bin_dir: Option<&Path>) -> Result<Self> {
        if let Some(dir) = bin_dir {
            for program in ["containerd", "ctr"] {
                if !crate::tools::is_executable(&dir.join(program)) {
                    bail!(
                        "{CONTAINERD_ENV}={}: no executable {program} there (scripts/install-deps.sh fetches containerd 1.7 and 2.1 into .cache/containerd/<version>/bin)",
                        dir.display()
                    );
                }
            }
        }
        let mut build = Self {
            bin_dir: bin_dir.map(Path::to_owned),
            version: Version {
                major: 0,
                minor: 0,
                patch: 0,
            },
        };
        let output = std::process::Command::new(build.program("containerd"))
            .arg("--version")
            .output()
            .with_context(|| format!("running {:?} --version", build.program("containerd")))?;
        build.version = Version::from_version_output(&String::from_utf8_lossy(&output.stdout))?;
        Ok(build)
    }

    /// The release, e.g. `2.1.9`.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The `config.toml` version this build reads natively: 3 for 2.x, else 2.
    pub fn config_version(&self) -> u8 {
        if self.version.major >= 2 { 3 } else { 2 }
    }

    /// The program `name` of this build (`containerd`, `ctr`), as a path or a bare name
    /// looked up on `PATH`.
    pub fn program(&self, name: &str) -> OsString {
        match &self.bin_dir {
            Some(dir) => dir.join(name).into_os_string(),
            None => OsString::from(name),
        }
    }

    /// `PATH` for containerd's process: the build's directory first, so containerd starts
    /// its own `containerd-shim-runc-v2`.
    pub fn path_env(&self) -> Option<OsString> {
        let dir = self.bin_dir.as_ref()?;
        let rest = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(dir.clone()).chain(std::env::split_paths(&rest));
        std::env::join_paths(dirs).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_debian_and_upstream_version_lines() {
        let table = [
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
                (1, 6, 20),
            ),
            (
                "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1",
                (1, 7, 24),
            ),
            (
                "containerd github.com/containerd/containerd/v2 2.1.9+unknown ",
                (2, 1, 9),
            ),
            (
                "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7",
                (2, 1, 4),
            ),
        ];
        for (line, (major, minor, patch)) in table {
            let version = Version::from_version_output(line).unwrap();
            assert_eq!(
                version,
                Version {
                    major,
                    minor,
                    patch
                },
                "{line}"
            );
        }
    }

    #[test]
    fn a_line_without_a_version_is_an_error() {
        assert!(Version::from_version_output("containerd").is_err());
        assert!(Version::from_version_output("containerd x y.z").is_err());
    }

    #[test]
    fn a_directory_without_containerd_says_where_builds_come_from() {
        let dir = tempfile::tempdir().unwrap();
        let error = Build::at(Some(dir.path())).unwrap_err().to_string();
        assert!(error.contains("install-deps.sh"), "{error}");
    }
}
