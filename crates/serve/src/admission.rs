//! Who may open another connection: a cap on connections from remote clients in total and a
//! cap per client (an IPv4 address, or an IPv6 /64: one host can hold a whole /64). Loopback
//! clients (the node's own containerd, health probes) count only
//! against the per-IP cap, so remote clients can never lock the node's own clients out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` remote connections are open.
    Total,
    /// This client IP holds `max_connections_per_ip` connections.
    PerIp,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "connection limit",
            Refusal::PerIp => "per-client connection limit",
        }
    }
}

#[derive(Default)]
struct Counts {
    remote: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// The open connections, counted; cheap to clone.
#[derive(Clone)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

/// Holds one admitted connection's place; dropping it frees the place.
pub(crate) struct Admitted {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Admission {
        Admission {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            counts: Arc::default(),
        }
    }

    /// Takes a place for a connection from `ip`, or says why there is none.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let ip = client_of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let remote = !ip.is_loopback();
        if remote && counts.remote >= self.max_total {
            return Err(Refusal::Total);
        }
        let held = counts.by_ip.entry(ip).or_default();
        if *held >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *held += 1;
        if remote {
            counts.remote += 1;
        }
        Ok(Admitted {
            ip,
            counts: self.counts.clone(),
        })
    }
}

/// The client an address belongs to: IPv4 addresses as they are, IPv6 addresses by /64.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if !v6.is_loopback() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        other => other,
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.ip.is_loopback() {
            counts.remote = counts.remote.saturating_sub(1);
        }
        if let Some(held) = counts.by_ip.get_mut(&self.ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_client_cannot_take_more_than_its_share() {
        let admission = Admission::new(10, 2);
        let _a = admission.admit(ip("10.0.0.1")).unwrap();
        let _b = admission.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(admission.admit(ip("10.0.0.1")).err(), Some(Refusal::PerIp));
        assert!(admission.admit(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn remote_clients_share_the_total_and_places_come_back_when_dropped() {
        let admission = Admission::new(2, 2);
        let a = admission.admit(ip("10.0.0.1")).unwrap();
        let _b = admission.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(admission.admit(ip("10.0.0.3")).err(), Some(Refusal::Total));
        drop(a);
        assert!(admission.admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn one_ipv6_slash_64_is_one_client() {
        let admission = Admission::new(10, 1);
        let _a = admission.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(
            admission.admit(ip("2001:db8::ffff:2")).err(),
            Some(Refusal::PerIp)
        );
        assert!(admission.admit(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn loopback_clients_are_not_locked_out_by_remote_ones() {
        let admission = Admission::new(1, 3);
        let _remote = admission.admit(ip("10.0.0.1")).unwrap();
        assert!(admission.admit(ip("127.0.0.1")).is_ok());
        assert!(admission.admit(ip("::ffff:127.0.0.1")).is_ok());
        assert!(admission.admit(ip("::1")).is_ok());
    }
}
