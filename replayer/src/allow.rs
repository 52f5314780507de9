//! The replayer's own boundary: `--allow-target HOST[:PORT]` (repeatable; `*.example.com`
//! for any subdomain). A replayer given a list refuses a job whose target is outside it
//! before sending anything, and tells the dispatcher why, so a compromised dispatcher or a
//! wrong job file cannot aim the fleet elsewhere. Without a list every target is allowed.

use std::fmt;
use std::str::FromStr;

/// One `--allow-target` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedTarget {
    host: HostPattern,
    /// Any port when absent.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// This host, lowercase (IPv6 without brackets).
    Exact(String),
    /// Any host ending in this (".example.com"), at any depth; not the domain itself.
    Subdomains(String),
}

/// Text that is not an `--allow-target` entry.
#[derive(Debug, thiserror::Error)]
#[error("--allow-target `{text}`: {why}; write HOST, HOST:PORT, *.DOMAIN[:PORT] or [IPv6]:PORT")]
pub struct AllowError {
    text: String,
    why: &'static str,
}

impl FromStr for AllowedTarget {
    type Err = AllowError;

    fn from_str(text: &str) -> Result<Self, AllowError> {
        let err = |why| AllowError { text: text.to_owned(), why };
        let t = text.trim();
        if t.contains("://") || t.contains('/') {
            return Err(err("a host, not a URL"));
        }
        let (host, port) =
            split_host_port(t).ok_or_else(|| err("the port is not a number from 1 to 65535"))?;
        let host = host.to_ascii_lowercase();
        let host = match host.strip_prefix("*.") {
            Some(domain) => HostPattern::Subdomains(format!(
                ".{}",
                valid(domain).ok_or_else(|| err("no domain after `*.`"))?
            )),
            None if host.contains('*') => {
                return Err(err("a wildcard only as the first label, `*.example.com`"));
            }
            None => HostPattern::Exact(valid(&host).ok_or_else(|| err("no host"))?.to_owned()),
        };
        Ok(AllowedTarget { host, port })
    }
}

fn valid(host: &str) -> Option<&str> {
    let ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
    ok.then_some(host)
}

/// "host", "host:port", "[v6]", "[v6]:port", "v6" → host (brackets off) and port.
fn split_host_port(t: &str) -> Option<(&str, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0);
    if let Some(rest) = t.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(port(p)?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match t.rsplit_once(':') {
        // Two colons or more: a bare IPv6 address, without a port.
        Some((host, _)) if host.contains(':') => Some((t, None)),
        Some((host, p)) => Some((host, Some(port(p)?))),
        None => Some((t, None)),
    }
}

impl fmt::Display for AllowedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Exact(h) if h.contains(':') => write!(f, "[{h}]")?,
            HostPattern::Exact(h) => f.write_str(h)?,
            HostPattern::Subdomains(d) => write!(f, "*{d}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl AllowedTarget {
    fn admits(&self, host: &str, port: u16) -> bool {
        let host_ok = match &self.host {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(d) => host.len() > d.len() && host.ends_with(d.as_str()),
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// The targets this replayer may send to; empty allows every target.
#[derive(Clone, Debug, Default)]
pub struct Allowlist(Vec<AllowedTarget>);

impl Allowlist {
    pub fn new(entries: Vec<AllowedTarget>) -> Self {
        Allowlist(entries)
    }

    /// Whether a job's target URL may be used; `Err` says why not, naming the list.
    pub fn check(&self, target: &str) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        let uri: http::Uri = target.parse().map_err(|_| format!("target `{target}` is not a URL"))?;
        let host =
            uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        if self.0.iter().any(|a| a.admits(&host, port)) {
            return Ok(());
        }
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        Err(format!("target {target} is outside this replayer's --allow-target list ({})", list.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::new(entries.iter().map(|e| e.parse().expect("entry")).collect())
    }

    #[test]
    fn hosts_ports_and_subdomains() {
        let l = list(&["staging.example.com", "127.0.0.1:8080", "*.canary.example.com:443", "[::1]:9000"]);
        assert!(l.check("http://staging.example.com").is_ok());
        assert!(l.check("https://STAGING.example.com:8443/prefix").is_ok(), "any port, any case");
        assert!(l.check("http://127.0.0.1:8080").is_ok());
        assert!(l.check("http://127.0.0.1:8081").is_err(), "another port");
        assert!(l.check("https://a.canary.example.com").is_ok(), "https is 443");
        assert!(l.check("https://a.b.canary.example.com").is_ok(), "any depth");
        assert!(l.check("http://a.canary.example.com").is_err(), "http is 80");
        assert!(l.check("https://canary.example.com").is_err(), "the domain itself is not a subdomain");
        assert!(l.check("https://evilcanary.example.com").is_err(), "a label boundary, not a suffix");
        assert!(l.check("http://[::1]:9000").is_ok());
        assert!(l.check("http://prod.example.com").is_err());
        let why = l.check("http://10.0.0.1").expect_err("outside");
        assert!(why.contains("10.0.0.1") && why.contains("staging.example.com"), "{why}");
        assert!(Allowlist::default().check("http://anything:1").is_ok(), "no list: all allowed");
    }

    #[test]
    fn bad_entries_say_what_to_write() {
        for bad in ["http://x.com", "x.com/path", "x.com:0", "x.com:http", "*", "a.*.com", "*.", ""] {
            let e = bad.parse::<AllowedTarget>().expect_err(bad).to_string();
            assert!(e.contains("HOST:PORT"), "{e}");
        }
        assert_eq!("[::1]:80".parse::<AllowedTarget>().expect("v6").to_string(), "[::1]:80");
        assert_eq!("*.Example.com".parse::<AllowedTarget>().expect("wild").to_string(), "*.example.com");
    }
}
