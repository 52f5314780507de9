//! A job file's regex, matched without the regex engine when it is a plain literal: most
//! filter patterns are (`^/health$`, `^/payments/`, `json`), and a rule is checked against
//! nearly every record, so a prefix compare instead of a regex search is most of a rule's
//! cost. Anything with a metacharacter goes to the regex crate, so the meaning is the
//! regex's either way.

use memchr::memmem;

#[derive(Debug)]
pub enum Matcher {
    /// `^lit$`
    Exact(Box<[u8]>),
    /// `^lit`
    Prefix(Box<[u8]>),
    /// `lit$`
    Suffix(Box<[u8]>),
    /// `lit`
    Contains(Box<memmem::Finder<'static>>),
    Regex(regex::bytes::Regex),
}

impl Matcher {
    pub fn new(pattern: &str) -> Result<Matcher, regex::Error> {
        let (anchored, rest) = pattern.strip_prefix('^').map_or((false, pattern), |r| (true, r));
        let (ended, lit) = rest.strip_suffix('$').map_or((false, rest), |r| (true, r));
        if regex::escape(lit) != lit {
            return regex::bytes::Regex::new(pattern).map(Matcher::Regex);
        }
        let bytes: Box<[u8]> = lit.as_bytes().into();
        Ok(match (anchored, ended) {
            (true, true) => Matcher::Exact(bytes),
            (true, false) => Matcher::Prefix(bytes),
            (false, true) => Matcher::Suffix(bytes),
            (false, false) => Matcher::Contains(Box::new(memmem::Finder::new(lit.as_bytes()).into_owned())),
        })
    }

    pub fn is_match(&self, hay: &[u8]) -> bool {
        match self {
            Matcher::Exact(l) => hay == &**l,
            Matcher::Prefix(l) => hay.starts_with(l),
            Matcher::Suffix(l) => hay.ends_with(l),
            Matcher::Contains(f) => f.find(hay).is_some(),
            Matcher::Regex(re) => re.is_match(hay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal or not, a matcher says what the regex says.
    #[test]
    fn literals_match_as_the_regex_would() {
        let patterns = [
            "^/health$",
            "^/payments/",
            "json",
            "/edit$",
            "",
            "^$",
            "^admin\\.",
            "^/a.b",
            "(?i)JSON",
            "^v[0-9]+$",
        ];
        let hays = [
            "/health",
            "/healthz",
            "/payments/1",
            "/x/payments/",
            "application/json",
            "/a/edit",
            "",
            "admin.x",
            "adminx",
            "/aXb",
            "JSON",
            "v12",
            "v",
        ];
        for p in patterns {
            let (m, re) = (Matcher::new(p).expect("compiles"), regex::Regex::new(p).expect("regex"));
            for h in hays {
                assert_eq!(m.is_match(h.as_bytes()), re.is_match(h), "{p:?} on {h:?}");
            }
        }
        assert!(matches!(Matcher::new("^/health$"), Ok(Matcher::Exact(_))));
        assert!(matches!(Matcher::new("^a.b"), Ok(Matcher::Regex(_))));
        assert!(Matcher::new("^(a").is_err());
    }
}
