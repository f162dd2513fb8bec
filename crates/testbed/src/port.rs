//! Free loopback ports for processes that cannot bind `:0` and report the port back.
//!
//! The port is found by binding `127.0.0.1:0` and dropping the listener, so another
//! process could take it in between; that race is accepted in tests.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use anyhow::{Context, Result};

/// Returns a loopback address with a port that was free a moment ago.
pub fn free_loopback_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to find a free port")?;
    listener
        .local_addr()
        .context("reading the address of a 127.0.0.1:0 listener")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_loopback_addr_is_on_loopback_with_a_real_port() {
        let addr = free_loopback_addr().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }
}
