//! Flag values every spegel binary parses the same way.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Parses `HOST:PORT`, `[V6]:PORT` or `:PORT` (all IPv4 addresses).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let error = || format!("{s:?} is not an address: use HOST:PORT or :PORT, e.g. :5000");
    match s.strip_prefix(':') {
        Some(port) => {
            let port = port.parse::<u16>().map_err(|_| error())?;
            Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        }
        None => s.parse().map_err(|_| error()),
    }
}

/// Parses a duration such as `250ms`, `10s`, `2m` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let error = || format!("{s:?} is not a duration: use e.g. 250ms, 10s, 2m");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| error())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_accept_a_bare_port() {
        assert_eq!(
            parse_addr(":5000").unwrap(),
            "0.0.0.0:5000".parse().unwrap()
        );
        assert_eq!(
            parse_addr(":8443").unwrap(),
            "0.0.0.0:8443".parse().unwrap()
        );
        assert_eq!(
            parse_addr("127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert_eq!(
            parse_addr("[::1]:5000").unwrap(),
            "[::1]:5000".parse().unwrap()
        );
        assert!(parse_addr(":http").is_err());
        assert!(parse_addr("localhost").is_err());
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }
}
