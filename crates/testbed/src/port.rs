//! Free loopback ports for processes that cannot bind `:0` and report the port back.
//!
//! The port is found by binding `127.0.0.1:0` and dropping the listener, so another
//! process could take it in between; that race is accepted in tests. Within this process a
//! port is handed out once: the kernel may give the same free port to two binds in a row
//! (a test once got it for both a node's registry and its router, and the node refused).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result, bail};

/// Ports this process has handed out.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Returns a loopback address with a port that was free a moment ago and that this process
/// has not handed out before.
pub fn free_loopback_addr() -> Result<SocketAddr> {
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding 127.0.0.1:0 to find a free port")?;
        let addr = listener
            .local_addr()
            .context("reading the address of a 127.0.0.1:0 listener")?;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.insert(addr.port()) {
            return Ok(addr);
        }
    }
    bail!("no loopback port this process has not used already in 64 tries")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn free_loopback_addr_is_on_loopback_with_a_real_port() {
        let addr = free_loopback_addr().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }

    #[test]
    fn no_port_is_handed_out_twice() {
        let ports: Vec<u16> = (0..200)
            .map(|_| free_loopback_addr().unwrap().port())
            .collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
