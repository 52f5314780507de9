//! The record: one recorded HTTP request, as analyzers produce it and the wheel schedules it.

use bytes::Bytes;

/// One recorded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Recorded instant, Unix nanoseconds.
    pub ts: i64,
    pub method: String,
    /// Origin form: path and query, e.g. "/users/1?x=2". Always starts with '/'.
    pub path: String,
    /// Recorded host (from an absolute URL or the Host header), for `preserve_host`.
    pub host: Option<String>,
    /// Headers in recorded order; a repeated header appears once per value.
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
    /// Hash key choosing the replayer (see `[analyzer] hash_field`); `None` = round-robin.
    pub key: Option<String>,
}

impl Record {
    /// First value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// First value of a query parameter (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        let query = self.path.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// Splits an absolute URL into (host, origin-form path); a path stays as it is.
pub fn split_url(url: &str) -> Option<(Option<String>, String)> {
    if url.starts_with('/') {
        return Some((None, url.to_owned()));
    }
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    Some((Some(authority.to_owned()), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_urls_split_into_host_and_path() {
        assert_eq!(split_url("/a?b=1"), Some((None, "/a?b=1".into())));
        assert_eq!(split_url("http://h:8/x/y?z"), Some((Some("h:8".into()), "/x/y?z".into())));
        assert_eq!(split_url("https://h"), Some((Some("h".into()), "/".into())));
        assert_eq!(split_url("https://h?q=1"), Some((Some("h".into()), "/?q=1".into())));
        assert_eq!(split_url("ftp://h/x"), None);
        assert_eq!(split_url("relative"), None);
    }

    #[test]
    fn query_params_are_found_by_name() {
        let r = Record {
            ts: 0,
            method: "GET".into(),
            path: "/p?a=1&user=42&flag".into(),
            host: None,
            headers: vec![],
            body: Bytes::new(),
            key: None,
        };
        assert_eq!(r.query_param("user"), Some("42"));
        assert_eq!(r.query_param("flag"), Some(""));
        assert_eq!(r.query_param("missing"), None);
    }
}
