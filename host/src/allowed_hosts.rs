//! `allowed_outbound_hosts`: which addresses a component may reach, per scheme.
//!
//! The syntax is Spin's: `scheme://host[:port]` where the scheme may be `*`, the host may be `*`,
//! `*.domain` (any subdomain) or an IP network in CIDR form, and the port may be `*`, a number or
//! a range `a..b` (end exclusive); a missing port means the scheme's well-known port. Entries may
//! use `{{ variable }}` templates, resolved against the application's variables. Every capability
//! that opens a connection (outbound HTTP, Redis, PostgreSQL) asks the same policy.

use std::net::IpAddr;
use std::ops::Range;

use thiserror::Error;
use url::Url;

/// Why an `allowed_outbound_hosts` entry or an address cannot be understood.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AllowedHostError {
    #[error("`{0}` has no scheme (write `https://host` or `*://host`)")]
    NoScheme(String),
    #[error("`{0}`: {1}")]
    Invalid(String, String),
}

/// The parsed `allowed_outbound_hosts` of one component.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    original: String,
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`, stored as `.example.com`.
    AnySubdomain(String),
    Exact(String),
    Network(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Port(u16),
    Range(Range<u16>),
}

/// An address a guest asked to reach, reduced to what the policy looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundAddress {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
}

impl OutboundAddress {
    /// Parses a URL-like address (`redis://host:6379`, `postgres://user@host/db`).
    pub fn parse(address: &str) -> Result<OutboundAddress, AllowedHostError> {
        let url = Url::parse(address)
            .map_err(|err| AllowedHostError::Invalid(address.to_owned(), err.to_string()))?;
        let host = url
            .host_str()
            .ok_or_else(|| AllowedHostError::Invalid(address.to_owned(), "no host".into()))?;
        Ok(OutboundAddress {
            scheme: url.scheme().to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port(),
        })
    }
}

/// `address` with any password replaced by `***`, fit for logs and guest-visible errors: the
/// URL's own, and a `password` parameter of its query (libpq takes `?password=` too).
pub fn redact_credentials(address: &str) -> String {
    let Ok(mut url) = Url::parse(address) else {
        return "<unparsable address>".to_owned();
    };
    let is_password = |key: &str| key.eq_ignore_ascii_case("password");
    let in_query = url.query_pairs().any(|(key, _)| is_password(&key));
    if url.password().is_none() && !in_query {
        return address.to_owned();
    }
    if url.password().is_some() {
        // Setting a password only fails on URLs that cannot have one, which this has.
        let _ = url.set_password(Some("***"));
    }
    if in_query {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_password(&key) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// The port a scheme uses when an address names none.
pub fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" => Some(6379),
        "postgres" | "postgresql" => Some(5432),
        "mysql" => Some(3306),
        "mqtt" => Some(1883),
        _ => None,
    }
}

impl AllowedHosts {
    /// Parses entries whose templates have already been resolved.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowedHosts, AllowedHostError> {
        let entries = entries
            .iter()
            .map(|entry| AllowedHost::parse(entry.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedHosts { entries })
    }

    /// Whether the component may reach `address`.
    pub fn allows(&self, address: &OutboundAddress) -> bool {
        self.entries.iter().any(|entry| entry.allows(address))
    }

    /// Whether an entry names `host` itself (not through a wildcard or a network): how a
    /// component is granted one of the host's in-process services.
    pub fn names_host(&self, host: &str) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.host == HostPattern::Exact(host.to_ascii_lowercase()))
    }

    /// Whether an entry grants `address`, which resolved to `ip`, by name rather than by
    /// wildcard: an entry whose scheme and port match and whose host is `address`'s host itself
    /// (`https://hooks.internal.example`, `http://127.0.0.1:*`), the address `ip` itself, or a
    /// network containing `ip` (`http://10.0.0.0/8:*`). `*` and `*.domain` grant nothing here:
    /// they say "anywhere", and the outbound guard reads that as "anywhere public".
    pub fn grants_explicitly(&self, address: &OutboundAddress, ip: IpAddr) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.grants_explicitly(address, ip))
    }

    /// Whether the component may reach the URL-like `address`; unparsable addresses are not.
    pub fn allows_url(&self, address: &str) -> bool {
        OutboundAddress::parse(address).is_ok_and(|address| self.allows(&address))
    }
}

impl AllowedHost {
    fn parse(original: &str) -> Result<AllowedHost, AllowedHostError> {
        let entry = original.trim();
        let invalid = |why: &str| AllowedHostError::Invalid(original.to_owned(), why.to_owned());
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| AllowedHostError::NoScheme(original.to_owned()))?;
        let scheme = match scheme {
            "*" => None,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(s.to_ascii_lowercase())
            }
            _ => return Err(invalid("the scheme must be letters or `*`")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // A CIDR network has a `/` and may be followed by `:port`; an IPv6 literal is bracketed.
        let (host, port) = if rest.parse::<ipnet_like::Network>().is_ok() || rest.ends_with(']') {
            (rest, "")
        } else {
            rest.rsplit_once(':').unwrap_or((rest, ""))
        };
        if host.contains('/') && host.parse::<ipnet_like::Network>().is_err() {
            return Err(invalid("an allowed host has no path"));
        }
        let host = match host {
            "*" => HostPattern::Any,
            h if h.starts_with("*.") => {
                let domain = &h[1..];
                if domain.contains('*') {
                    return Err(invalid("a wildcard may only start a host, as `*.domain`"));
                }
                HostPattern::AnySubdomain(domain.to_ascii_lowercase())
            }
            h if h.contains('*') => {
                return Err(invalid("a wildcard may only start a host, as `*.domain`"));
            }
            "" => return Err(invalid("no host")),
            h => match h.parse::<ipnet_like::Network>() {
                Ok(network) => HostPattern::Network(network.addr, network.prefix),
                Err(_) => HostPattern::Exact(
                    h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_ascii_lowercase(),
                ),
            },
        };
        let port = match port {
            "*" => PortPattern::Any,
            "" => match scheme.as_deref().and_then(well_known_port) {
                Some(port) => PortPattern::Port(port),
                None => return Err(invalid("no port, and the scheme has no well-known port")),
            },
            p => match p.split_once("..") {
                Some((start, end)) => {
                    let start = start.parse().map_err(|_| invalid("bad port range"))?;
                    let end = end.parse().map_err(|_| invalid("bad port range"))?;
                    PortPattern::Range(start..end)
                }
                None => PortPattern::Port(p.parse().map_err(|_| invalid("bad port"))?),
            },
        };
        Ok(AllowedHost {
            original: original.to_owned(),
            scheme,
            host,
            port,
        })
    }

    fn allows(&self, address: &OutboundAddress) -> bool {
        let host = address.host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::AnySubdomain(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Exact(exact) => *exact == host,
            HostPattern::Network(addr, prefix) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ipnet_like::contains(*addr, *prefix, ip)),
        };
        self.scheme_and_port_match(address) && host_ok
    }

    fn grants_explicitly(&self, address: &OutboundAddress, ip: IpAddr) -> bool {
        // `::ffff:10.0.0.1` is 10.0.0.1 on the wire: an IPv4 grant covers it.
        let ip = ip.to_canonical();
        let host_ok = match &self.host {
            HostPattern::Any | HostPattern::AnySubdomain(_) => false,
            HostPattern::Exact(exact) => {
                exact.eq_ignore_ascii_case(&address.host)
                    || exact
                        .parse::<IpAddr>()
                        .is_ok_and(|named| named.to_canonical() == ip)
            }
            HostPattern::Network(addr, prefix) => ipnet_like::contains(*addr, *prefix, ip),
        };
        self.scheme_and_port_match(address) && host_ok
    }

    fn scheme_and_port_match(&self, address: &OutboundAddress) -> bool {
        let scheme_ok = self
            .scheme
            .as_deref()
            .is_none_or(|scheme| scheme.eq_ignore_ascii_case(&address.scheme));
        let port = address.port.or_else(|| well_known_port(&address.scheme));
        let port_ok = match (&self.port, port) {
            (PortPattern::Any, _) => true,
            (PortPattern::Port(allowed), Some(port)) => *allowed == port,
            (PortPattern::Range(range), Some(port)) => range.contains(&port),
            (_, None) => false,
        };
        scheme_ok && port_ok
    }
}

/// Just enough of IP networks for CIDR entries, to avoid a crate for one comparison.
mod ipnet_like {
    use std::net::IpAddr;
    use std::str::FromStr;

    pub struct Network {
        pub addr: IpAddr,
        pub prefix: u8,
    }

    impl FromStr for Network {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let (addr, prefix) = s.split_once('/').ok_or(())?;
            let addr: IpAddr = addr.parse().map_err(|_| ())?;
            let prefix: u8 = prefix.parse().map_err(|_| ())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return Err(());
            }
            Ok(Network { addr, prefix })
        }
    }

    pub fn contains(network: IpAddr, prefix: u8, ip: IpAddr) -> bool {
        match (network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entries: &[&str], address: &str) -> bool {
        AllowedHosts::parse(entries).unwrap().allows_url(address)
    }

    #[test]
    fn exact_hosts_and_default_ports() {
        assert!(allows(&["https://example.com"], "https://example.com/path"));
        assert!(!allows(&["https://example.com"], "http://example.com"));
        assert!(!allows(
            &["https://example.com"],
            "https://example.com:8443"
        ));
        assert!(allows(&["redis://127.0.0.1:6379"], "redis://127.0.0.1"));
        assert!(allows(
            &["postgres://db.internal"],
            "postgres://user:pw@db.internal/nexus"
        ));
        assert!(!allows(&[], "https://example.com"));
    }

    #[test]
    fn wildcards_ranges_and_networks() {
        assert!(allows(&["*://*:*"], "redis://anything:1"));
        assert!(allows(&["http://*.example.com"], "http://api.example.com"));
        assert!(!allows(&["http://*.example.com"], "http://example.org"));
        assert!(allows(&["http://127.0.0.1:*"], "http://127.0.0.1:5555"));
        assert!(!allows(&["http://127.0.0.1:*"], "http://localhost:5555"));
        assert!(allows(
            &["http://localhost:8000..9000"],
            "http://localhost:8080"
        ));
        assert!(!allows(
            &["http://localhost:8000..9000"],
            "http://localhost:9000"
        ));
        assert!(allows(&["http://10.0.0.0/8:*"], "http://10.1.2.3:80"));
        assert!(allows(&["http://10.0.0.0/8"], "http://10.1.2.3"));
        assert!(!allows(&["http://10.0.0.0/8"], "http://11.1.2.3"));
    }

    #[test]
    fn explicit_grants_name_the_host_the_address_or_its_network() {
        let grants = |entries: &[&str], url: &str, ip: &str| {
            AllowedHosts::parse(entries)
                .unwrap()
                .grants_explicitly(&OutboundAddress::parse(url).unwrap(), ip.parse().unwrap())
        };
        // Wildcards allow the request but grant no non-public address.
        assert!(!grants(
            &["http://*:*"],
            "http://127.0.0.1:8080",
            "127.0.0.1"
        ));
        assert!(!grants(&["*://*:*"], "http://localhost:80", "127.0.0.1"));
        assert!(!grants(
            &["https://*.example.com"],
            "https://hooks.example.com",
            "10.0.0.1"
        ));
        // The host by name, or the address itself.
        assert!(grants(
            &["http://127.0.0.1:*"],
            "http://127.0.0.1:8080",
            "127.0.0.1"
        ));
        assert!(grants(
            &["https://hooks.internal.example"],
            "https://hooks.internal.example/x",
            "10.1.2.3"
        ));
        assert!(grants(&["http://localhost:*"], "http://localhost:1", "::1"));
        assert!(grants(&["http://[::1]:*"], "http://[::1]:1", "::1"));
        assert!(grants(
            &["http://*:*", "http://10.0.0.5:*"],
            "http://name.example:80",
            "10.0.0.5"
        ));
        // A network contains the address, in its IPv4-mapped IPv6 form too.
        assert!(grants(
            &["http://10.0.0.0/8:*"],
            "http://10.1.2.3:80",
            "10.1.2.3"
        ));
        assert!(grants(
            &["http://10.0.0.0/8:*"],
            "http://name.example",
            "::ffff:10.9.9.9"
        ));
        assert!(grants(
            &["http://fd00::/8:*"],
            "http://name.example",
            "fd00::5"
        ));
        assert!(!grants(
            &["http://10.0.0.0/8:*"],
            "http://name.example",
            "11.0.0.1"
        ));
        // Scheme and port still have to match.
        assert!(!grants(
            &["https://127.0.0.1:*"],
            "http://127.0.0.1:8080",
            "127.0.0.1"
        ));
        assert!(!grants(
            &["http://127.0.0.1:9000"],
            "http://127.0.0.1:8080",
            "127.0.0.1"
        ));
        // Another name that resolves to a granted name's address is not that name.
        assert!(!grants(
            &["http://localhost:*"],
            "http://evil.example:80",
            "10.0.0.1"
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_credentials("postgres://nexus:s3cret@db:5432/nexus"),
            "postgres://nexus:***@db:5432/nexus"
        );
        assert_eq!(
            redact_credentials("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_credentials("postgres://db/nexus?user=nexus&password=s3cret&sslmode=require"),
            "postgres://db/nexus?user=nexus&password=***&sslmode=require"
        );
        assert_eq!(
            redact_credentials("postgres://u:p@db/nexus?PASSWORD=s3cret"),
            "postgres://u:***@db/nexus?PASSWORD=***"
        );
        assert_eq!(
            redact_credentials("postgres://db/n?password=a%20b"),
            "postgres://db/n?password=***"
        );
    }

    #[test]
    fn refuses_malformed_entries() {
        for bad in [
            "example.com",
            "https://example.com/path",
            "https://ex*ample.com",
            "https://*.*.com",
            "foo://host",
            "https://host:notaport",
            "1http://host",
        ] {
            assert!(
                AllowedHosts::parse(&[bad]).is_err(),
                "{bad} should be refused"
            );
        }
    }
}
