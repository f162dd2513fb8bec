//! How the process ends: errors an operator fixes by changing configuration exit 64.

use std::fmt;

/// Exit code for a configuration an operator must fix (EX_USAGE).
pub const BAD_CONFIG: u8 = 64;

/// An error whose fix is a configuration change. `main` prints it as is and exits 64.
#[derive(Debug)]
pub struct BadConfig(pub String);

impl fmt::Display for BadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadConfig {}

/// [`BadConfig`] if `error` is a configuration error of `spegel-hostconfig`, else as is.
pub fn classify(error: spegel_hostconfig::Error) -> anyhow::Error {
    if error.is_bad_config() {
        BadConfig(error.to_string()).into()
    } else {
        error.into()
    }
}
