//! `GET /certs` in Envoy's shape: for every TLS context of the running config (each listener
//! certificate of a `DownstreamTlsContext`, each cluster's `UpstreamTlsContext`; tcp_proxy
//! listeners have no TLS), its CA (`ca_cert`) and its
//! certificate chain's leaf (`cert_chain`), each with its path, serial number, subject
//! alternative names, validity and days until it expires.
//!
//! The certificates are read from their files when asked (as Envoy shows what it loaded, and
//! weir loads the files the config names), and read with a small DER walker of its own: only
//! the few fields shown, every length checked against what is left, nothing trusted.

use crate::config::cluster_spec::ClusterSpec;
use crate::snapshot::ListenerConfig;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `/certs` answer for the config's listeners and clusters.
pub fn dump(listeners: &[ListenerConfig], clusters: &[std::sync::Arc<ClusterSpec>]) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut certificates = Vec::new();
    for listener in listeners {
        let Some(tls) = &listener.tls else { continue };
        let ca: Vec<Value> = tls
            .client_ca
            .iter()
            .filter_map(|path| details(path, now))
            .collect();
        for (chain, _key) in &tls.certificates {
            certificates.push(json!({
                "ca_cert": ca,
                "cert_chain": details(chain, now).into_iter().collect::<Vec<_>>(),
            }));
        }
    }
    for cluster in clusters {
        let Some(tls) = &cluster.tls else { continue };
        let ca: Vec<Value> = tls
            .ca_file
            .iter()
            .filter_map(|path| details(path, now))
            .collect();
        let chain: Vec<Value> = tls
            .cert_chain_file
            .iter()
            .filter_map(|path| details(path, now))
            .collect();
        if ca.is_empty() && chain.is_empty() {
            continue;
        }
        certificates.push(json!({"ca_cert": ca, "cert_chain": chain}));
    }
    json!({ "certificates": certificates })
}

/// The first certificate of the PEM file at `path`, as Envoy's `CertificateDetails`.
fn details(path: &Path, now: i64) -> Option<Value> {
    let certs = crate::config::pem::certificates(path).ok()?;
    let cert = Certificate::parse(certs.first()?.as_ref())?;
    let days = (cert.not_after - now).div_euclid(86_400).max(0);
    let sans: Vec<Value> = cert
        .alt_names
        .iter()
        .map(|name| match name {
            AltName::Dns(dns) => json!({ "dns": dns }),
            AltName::Uri(uri) => json!({ "uri": uri }),
            AltName::Ip(ip) => json!({ "ip_address": ip }),
        })
        .collect();
    Some(json!({
        "path": path.display().to_string(),
        "serial_number": cert.serial,
        "subject_alt_names": sans,
        "days_until_expiration": days.to_string(),
        "valid_from": rfc3339(cert.not_before),
        "expiration_time": rfc3339(cert.not_after),
    }))
}

/// The fields of an X.509 certificate that `/certs` shows.
#[derive(Debug, PartialEq, Eq)]
struct Certificate {
    /// Lowercase hex, as Envoy prints it.
    serial: String,
    /// Unix seconds.
    not_before: i64,
    not_after: i64,
    alt_names: Vec<AltName>,
}

#[derive(Debug, PartialEq, Eq)]
enum AltName {
    Dns(String),
    Uri(String),
    Ip(String),
}

/// One DER element: its tag byte and its content.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Reads DER elements one after another from a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next element, or `None` at the end or on malformed input (multi-byte tags and
    /// indefinite lengths are not DER for what is read here).
    fn next(&mut self) -> Option<Element<'a>> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |len, b| (len << 8) | usize::from(*b));
            (len, &rest[count..])
        };
        if rest.len() < len {
            return None;
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Some(Element { tag, content })
    }
}

impl Certificate {
    fn parse(der: &[u8]) -> Option<Certificate> {
        let certificate = Reader(der).next().filter(|e| e.tag == 0x30)?;
        let tbs = Reader(certificate.content)
            .next()
            .filter(|e| e.tag == 0x30)?;
        let mut fields = Reader(tbs.content);
        let mut field = fields.next()?;
        if field.tag == 0xa0 {
            // [0] version.
            field = fields.next()?;
        }
        if field.tag != 0x02 {
            return None;
        }
        let serial = hex(strip_leading_zeros(field.content));
        let _signature = fields.next()?;
        let _issuer = fields.next()?;
        let validity = fields.next().filter(|e| e.tag == 0x30)?;
        let mut times = Reader(validity.content);
        let not_before = time(&times.next()?)?;
        let not_after = time(&times.next()?)?;
        let mut alt_names = Vec::new();
        while let Some(field) = fields.next() {
            // [3] extensions: a SEQUENCE of Extension.
            if field.tag != 0xa3 {
                continue;
            }
            let list = Reader(field.content).next().filter(|e| e.tag == 0x30)?;
            let mut extensions = Reader(list.content);
            while let Some(extension) = extensions.next() {
                let mut parts = Reader(extension.content);
                let Some(oid) = parts.next() else { continue };
                // 2.5.29.17, subjectAltName.
                if oid.tag != 0x06 || oid.content != [0x55, 0x1d, 0x11] {
                    continue;
                }
                let mut value = parts.next()?;
                if value.tag == 0x01 {
                    // critical BOOLEAN.
                    value = parts.next()?;
                }
                let names = Reader(value.content).next().filter(|e| e.tag == 0x30)?;
                let mut names = Reader(names.content);
                while let Some(name) = names.next() {
                    let text = || String::from_utf8_lossy(name.content).into_owned();
                    match name.tag {
                        0x82 => alt_names.push(AltName::Dns(text())),
                        0x86 => alt_names.push(AltName::Uri(text())),
                        0x87 => {
                            if let Some(ip) = ip(name.content) {
                                alt_names.push(AltName::Ip(ip));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Some(Certificate {
            serial,
            not_before,
            not_after,
            alt_names,
        })
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ip(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(std::net::Ipv6Addr::from(octets).to_string())
        }
        _ => None,
    }
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// Unix seconds.
fn time(element: &Element<'_>) -> Option<i64> {
    let text = std::str::from_utf8(element.content).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| digits.get(range)?.parse::<i64>().ok();
    let (year, rest) = match (element.tag, digits.len()) {
        (0x17, 12) => {
            let yy = number(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (0x18, 14) => (number(0..4)?, 4),
        _ => return None,
    };
    let month = number(rest..rest + 2)?;
    let day = number(rest + 2..rest + 4)?;
    let hour = number(rest + 4..rest + 6)?;
    let minute = number(rest + 6..rest + 8)?;
    let second = number(rest + 8..rest + 10)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `2027-01-06T04:14:23Z`.
fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    // The inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_reads_back() {
        let mut params =
            rcgen::CertificateParams::new(vec!["example.com".into(), "*.example.org".into()])
                .expect("params");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x2a, 0x5f, 0x61]));
        params.not_before = rcgen::date_time_ymd(2026, 12, 7);
        params.not_after = rcgen::date_time_ymd(2051, 1, 6);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let parsed = Certificate::parse(cert.der()).expect("parses");
        assert_eq!(parsed.serial, "2a5f61");
        assert_eq!(rfc3339(parsed.not_before), "2026-12-07T00:00:00Z");
        // 2051: a GeneralizedTime.
        assert_eq!(rfc3339(parsed.not_after), "2051-01-06T00:00:00Z");
        assert_eq!(
            parsed.alt_names,
            [
                AltName::Dns("example.com".into()),
                AltName::Dns("*.example.org".into()),
                AltName::Ip("127.0.0.1".into()),
            ]
        );
    }

    #[test]
    fn malformed_input_is_none_not_a_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x02, 0x02],
        ] {
            assert_eq!(Certificate::parse(bad), None);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
