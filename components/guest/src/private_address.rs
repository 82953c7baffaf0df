//! Which outbound destinations are not public: loopback, private, link-local (the cloud
//! metadata address among them), CGNAT, multicast and the other ranges no tenant's webhook, bot
//! or aggregator lives on. An outbound URL a tenant gives must not reach into the network nexus
//! runs in (server-side request forgery), so it is checked twice with these rules:
//!
//! - when it is written (provisioning), by its host as written: an IP literal in these ranges,
//!   `localhost` and the cloud metadata names are refused ([`url_refusal`]); a component cannot
//!   resolve names, so this is all it can see, and under Spin it is the only check;
//! - when it is delivered, by the nexus host (`host/src/outbound_http.rs`), on every address the
//!   host name resolves to ([`classify`]), which also catches a public name that resolves to a
//!   private address.
//!
//! The operator's application variable `allow_private_outbound` ([`allowed`]) lifts both.
//! Plain Rust, shared by the components and the host, tested natively.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::api::{ApiError, ApiResult};

/// The application variable with which an operator lets outbound URLs reach non-public
/// addresses (tests, a receiver on the operator's own network).
pub const SWITCH: &str = "allow_private_outbound";

/// Whether the value of [`SWITCH`] allows non-public destinations: only `true` does, so that a
/// typo keeps the guard on.
pub fn allowed(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("true")
}

/// The kind of non-public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonPublic {
    /// `0.0.0.0/8`, `::`: "this host" (connecting to it reaches the local machine).
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7` (and the old `fec0::/10`).
    Private,
    /// `169.254.0.0/16` (with the cloud metadata address 169.254.169.254), `fe80::/10`.
    LinkLocal,
    /// `100.64.0.0/10`: carrier-grade NAT (and some clouds' metadata, 100.100.100.200).
    SharedAddressSpace,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Ranges never routed on the internet: `192.0.0.0/24`, the documentation and benchmarking
    /// networks, `240.0.0.0/4`, `2001:db8::/32`, `100::/64`, the deprecated IPv4-compatible
    /// `::a.b.c.d`.
    Reserved,
}

impl NonPublic {
    /// How an error message or a log line names it.
    pub fn describe(self) -> &'static str {
        match self {
            NonPublic::Unspecified => "an unspecified (this-host) address",
            NonPublic::Loopback => "a loopback address",
            NonPublic::Private => "a private-network address",
            NonPublic::LinkLocal => "a link-local address (such as the cloud metadata service)",
            NonPublic::SharedAddressSpace => "a carrier-grade NAT address",
            NonPublic::Multicast => "a multicast address",
            NonPublic::Broadcast => "the broadcast address",
            NonPublic::Reserved => "a reserved address",
        }
    }
}

/// What kind of non-public address `ip` is, or `None` for a public one. An IPv6 address that
/// carries an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4
/// `2002:aabb:ccdd::`) is what its IPv4 address is, since that is where it leads.
pub fn classify(ip: IpAddr) -> Option<NonPublic> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<NonPublic> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        (0, _, _) => NonPublic::Unspecified,
        (127, _, _) => NonPublic::Loopback,
        (10, _, _) | (192, 168, _) => NonPublic::Private,
        (172, 16..=31, _) => NonPublic::Private,
        (169, 254, _) => NonPublic::LinkLocal,
        (100, 64..=127, _) => NonPublic::SharedAddressSpace,
        (224..=239, _, _) => NonPublic::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => NonPublic::Broadcast,
        (240..=255, _, _) => NonPublic::Reserved,
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => NonPublic::Reserved,
        (198, 18..=19, _) => NonPublic::Reserved,
        _ => return None,
    };
    Some(kind)
}

fn classify_v6(ip: Ipv6Addr) -> Option<NonPublic> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    let embedded = |high: u16, low: u16| {
        let [h1, h2] = high.to_be_bytes();
        let [l1, l2] = low.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    let kind = match segments {
        [0, 0, 0, 0, 0, 0, 0, 0] => NonPublic::Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => NonPublic::Loopback,
        // IPv4-compatible (deprecated): what its IPv4 address is, and reserved in any case.
        [0, 0, 0, 0, 0, 0, high, low] => {
            classify_v4(embedded(high, low)).unwrap_or(NonPublic::Reserved)
        }
        // NAT64 (RFC 6052): a gateway forwards it to the IPv4 address in its last 32 bits.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => classify_v4(embedded(high, low))?,
        // 6to4 (RFC 3056): the IPv4 address in bits 16 to 48.
        [0x2002, high, low, ..] => classify_v4(embedded(high, low))?,
        [0x100, 0, 0, 0, ..] => NonPublic::Reserved,
        [0x2001, 0xdb8, ..] => NonPublic::Reserved,
        [first, ..] if first & 0xfe00 == 0xfc00 => NonPublic::Private,
        [first, ..] if first & 0xffc0 == 0xfec0 => NonPublic::Private,
        [first, ..] if first & 0xffc0 == 0xfe80 => NonPublic::LinkLocal,
        [first, ..] if first & 0xff00 == 0xff00 => NonPublic::Multicast,
        _ => return None,
    };
    Some(kind)
}

/// Host names that lead to the local machine or to a cloud's metadata service wherever they
/// are resolved (beside `localhost` and `*.localhost`, which RFC 6761 reserves for loopback).
const METADATA_NAMES: [&str; 6] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
];

/// Why the URL `url` (an absolute http(s) URL a tenant gave) must not be written, judged by its
/// host as written: an IP literal in a non-public range (in any spelling a resolver takes:
/// `127.1`, `0x7f.0.0.1`, `2130706433`, `[::ffff:127.0.0.1]`), `localhost` or `*.localhost`, or
/// a cloud metadata name. `None` when the host is none of them; a name is not resolved here, so a
/// public name that resolves to a private address passes (the nexus host refuses it when it
/// delivers).
pub fn url_refusal(url: &str) -> Option<String> {
    let host = url_host(url)?;
    if let Some(ip) = ip_literal(&host) {
        return classify(ip).map(|kind| format!("its host {ip} is {}", kind.describe()));
    }
    let name = host.strip_suffix('.').unwrap_or(&host);
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(format!("its host {host} is the local machine"));
    }
    if METADATA_NAMES.contains(&name) {
        return Some(format!("its host {host} is a cloud metadata service"));
    }
    None
}

/// Refuses (400 `INVALID_PARAMETER`, naming `field`) the outbound URL `url` a tenant gives when
/// [`url_refusal`] has a reason, unless the operator `allowed` non-public destinations.
pub fn check_url(field: &str, url: &str, allowed: bool) -> ApiResult<()> {
    match url_refusal(url) {
        Some(why) if !allowed => Err(ApiError::bad_parameter(format!(
            "`{field}` must reach a public address, but {why} (an operator allows such \
             destinations with the application variable {SWITCH})"
        ))),
        _ => Ok(()),
    }
}

/// The host of an absolute URL, lower-cased and percent-decoded, as an HTTP client would take
/// it: after any `user:password@`, before the port; an IPv6 literal without its brackets and
/// zone. `None` when there is no host to judge.
fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    // A backslash ends the authority too: URL parsers treat it as `/` in http(s) URLs.
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        let inside = bracketed.split(']').next().unwrap_or_default();
        // `[fe80::1%25eth0]`: the zone says which interface, not which address.
        inside.split('%').next().unwrap_or_default().to_owned()
    } else {
        let host = host_port.split(':').next().unwrap_or_default();
        percent_decode(host)
    };
    let host = host.to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `host` as an IP address, if it is one in any spelling that URL parsers and the C resolver
/// take: an IPv6 literal, or an IPv4 one of one to four parts, each decimal, octal (`0` first)
/// or hexadecimal (`0x` first), the last filling the remaining bytes (`127.1`, `2130706433`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let numbers = parts
        .iter()
        .map(|part| ipv4_number(part))
        .collect::<Option<Vec<u64>>>()?;
    let (last, leading) = numbers.split_last()?;
    let mut value: u64 = 0;
    for number in leading {
        if *number > 255 {
            return None;
        }
        value = (value << 8) | number;
    }
    let remaining_bits = 8 * (4 - leading.len() as u32);
    if *last >= 1u64 << remaining_bits {
        return None;
    }
    value = (value << remaining_bits) | last;
    u32::try_from(value)
        .ok()
        .map(|bits| IpAddr::V4(Ipv4Addr::from(bits)))
}

fn ipv4_number(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        // `0x` alone is zero, as URL parsers read it; an empty part is no number.
        return (radix == 16).then_some(0);
    }
    if digits.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<NonPublic> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn classifies_ipv4() {
        assert_eq!(kind("127.0.0.1"), Some(NonPublic::Loopback));
        assert_eq!(kind("127.255.0.9"), Some(NonPublic::Loopback));
        assert_eq!(kind("10.1.2.3"), Some(NonPublic::Private));
        assert_eq!(kind("172.16.0.1"), Some(NonPublic::Private));
        assert_eq!(kind("172.31.255.255"), Some(NonPublic::Private));
        assert_eq!(kind("192.168.1.1"), Some(NonPublic::Private));
        assert_eq!(kind("169.254.169.254"), Some(NonPublic::LinkLocal));
        assert_eq!(kind("100.64.0.1"), Some(NonPublic::SharedAddressSpace));
        assert_eq!(kind("100.100.100.200"), Some(NonPublic::SharedAddressSpace));
        assert_eq!(kind("0.0.0.0"), Some(NonPublic::Unspecified));
        assert_eq!(kind("224.0.0.1"), Some(NonPublic::Multicast));
        assert_eq!(kind("255.255.255.255"), Some(NonPublic::Broadcast));
        assert_eq!(kind("240.0.0.1"), Some(NonPublic::Reserved));
        assert_eq!(kind("192.0.0.192"), Some(NonPublic::Reserved));
        assert_eq!(kind("198.18.0.1"), Some(NonPublic::Reserved));
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.0.1",
            "192.169.0.1",
            "11.0.0.1",
            "223.255.255.255",
        ] {
            assert_eq!(kind(public), None, "{public} is public");
        }
    }

    #[test]
    fn classifies_ipv6_and_the_ipv4_it_carries() {
        assert_eq!(kind("::1"), Some(NonPublic::Loopback));
        assert_eq!(kind("::"), Some(NonPublic::Unspecified));
        assert_eq!(kind("fc00::1"), Some(NonPublic::Private));
        assert_eq!(kind("fd00:ec2::254"), Some(NonPublic::Private));
        assert_eq!(kind("fe80::1"), Some(NonPublic::LinkLocal));
        assert_eq!(kind("febf::1"), Some(NonPublic::LinkLocal));
        assert_eq!(kind("fec0::1"), Some(NonPublic::Private));
        assert_eq!(kind("ff02::1"), Some(NonPublic::Multicast));
        assert_eq!(kind("2001:db8::1"), Some(NonPublic::Reserved));
        // IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms lead where their IPv4 address does.
        assert_eq!(kind("::ffff:127.0.0.1"), Some(NonPublic::Loopback));
        assert_eq!(kind("::ffff:169.254.169.254"), Some(NonPublic::LinkLocal));
        assert_eq!(kind("::ffff:10.0.0.1"), Some(NonPublic::Private));
        assert_eq!(kind("::ffff:8.8.8.8"), None);
        assert_eq!(kind("::127.0.0.1"), Some(NonPublic::Loopback));
        assert_eq!(kind("::8.8.8.8"), Some(NonPublic::Reserved));
        assert_eq!(kind("64:ff9b::a9fe:a9fe"), Some(NonPublic::LinkLocal));
        assert_eq!(kind("64:ff9b::808:808"), None);
        assert_eq!(kind("2002:7f00:1::"), Some(NonPublic::Loopback));
        assert_eq!(kind("2002:808:808::"), None);
        for public in ["2606:4700:4700::1111", "2a00:1450:4001::200e", "fbff::1"] {
            assert_eq!(kind(public), None, "{public} is public");
        }
    }

    #[test]
    fn refuses_urls_by_their_host_as_written() {
        for url in [
            "http://127.0.0.1:9/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://localhost/",
            "http://10.1.2.3/",
            "https://LOCALHOST:8443/x",
            "http://localhost./",
            "http://api.localhost/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://Metadata.Google.Internal./",
            "http://user:pw@127.0.0.1/",
            "http://example.com@127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://0/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fe80::1%25eth0]/",
            "http://127.0.0.1\\@example.com/",
            "http://%31%32%37.0.0.1/",
            "http://172.20.0.5:8080/hook?x=1",
            "http://192.168.0.10#frag",
        ] {
            assert!(url_refusal(url).is_some(), "{url} must be refused");
        }
        assert_eq!(
            url_refusal("http://169.254.169.254/latest/meta-data").as_deref(),
            Some(
                "its host 169.254.169.254 is a link-local address (such as the cloud metadata service)"
            )
        );
        for url in [
            "https://hooks.example.com/x",
            "http://8.8.8.8/",
            "http://[2606:4700:4700::1111]:8080/",
            "https://127.0.0.1.nip.io/",
            "https://localhost.example.com/",
            "https://api.twilio.com",
            "http://12.0.0.1/",
            "https://metadata.example.com/",
        ] {
            assert_eq!(url_refusal(url), None, "{url} must pass");
        }
    }

    #[test]
    fn check_url_names_the_field_unless_the_operator_allows() {
        let refused = check_url("settings.webhookUrl", "http://[::1]/", false).unwrap_err();
        assert_eq!(refused.http_status, 400);
        assert_eq!(refused.code, crate::api::Code::InvalidParameter);
        assert!(
            refused.message.contains("`settings.webhookUrl`") && refused.message.contains("::1"),
            "{}",
            refused.message
        );
        assert!(check_url("url", "http://[::1]/", true).is_ok());
        assert!(check_url("url", "https://hooks.example.com/", false).is_ok());
    }

    #[test]
    fn reads_ipv4_in_every_spelling() {
        let v4 = |host: &str| ip_literal(host).map(|ip| ip.to_string());
        assert_eq!(v4("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("10.65535").as_deref(), Some("10.0.255.255"));
        assert_eq!(v4("2130706433").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0x7f000001").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("017700000001").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("1.2.3.4.").as_deref(), Some("1.2.3.4"));
        assert_eq!(v4("256.1.1.1"), None);
        assert_eq!(v4("1.2.3.256"), None);
        assert_eq!(v4("4294967296"), None);
        assert_eq!(v4("1.2.3.4.5"), None);
        assert_eq!(v4("1..2"), None);
        assert_eq!(v4("example.com"), None);
        assert_eq!(v4("08.1.1.1"), None);
    }

    #[test]
    fn only_true_lifts_the_guard() {
        assert!(allowed("true"));
        assert!(allowed(" TRUE "));
        assert!(!allowed("false"));
        assert!(!allowed(""));
        assert!(!allowed("yes"));
        assert!(!allowed("1"));
    }
}
