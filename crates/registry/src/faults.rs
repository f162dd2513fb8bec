//! [`Faults`]: background parts of the node that stopped when they should not have. `/readyz`
//! answers 503 naming the first one; the node's systemd supervisor stops pinging the watchdog.

use std::sync::{Arc, Mutex, PoisonError};

/// Most faults remembered (the first ones say what went wrong).
const MAX_FAULTS: usize = 16;

/// A shared list of faults; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<Vec<String>>>);

impl Faults {
    /// Records that `what` failed (e.g. "the advertiser stopped").
    pub fn report(&self, what: impl Into<String>) {
        let mut faults = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if faults.len() < MAX_FAULTS {
            faults.push(what.into());
        }
    }

    /// The first fault, if any.
    pub fn first(&self) -> Option<String> {
        let faults = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        faults.first().cloned()
    }
}
