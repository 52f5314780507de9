//! Havok's dispatcher.toml runs unchanged. Besides the keys reprise shares with it, Havok's
//! sample file carries keys reprise has no use for; each is reported once as a warning that
//! names the key and why, never as an error. Keys that are neither reprise's nor Havok's
//! stay errors (a typo must not pass silently).

/// Havok-only keys (a table stands for every key under it) and why reprise does not use them.
const HAVOK_ONLY: &[(&str, &str)] = &[
    (
        "fetcher.sls.access_key_id",
        "credentials are never read from the job file; reprise takes them from the AWS chain \
         (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or the instance role)",
    ),
    (
        "fetcher.sls.access_key_secret",
        "credentials are never read from the job file; reprise takes them from the AWS chain \
         (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or the instance role)",
    ),
    (
        "fetcher.sls.project",
        "reprise reads SLS logs shipped to OSS through [fetcher.s3], not the SLS query API",
    ),
    (
        "fetcher.sls.logstore",
        "reprise reads SLS logs shipped to OSS through [fetcher.s3], not the SLS query API",
    ),
    (
        "fetcher.sls.expression",
        "reprise reads SLS logs shipped to OSS through [fetcher.s3], not the SLS query API; \
         select records with [job] begin/end and the key pattern",
    ),
    ("analyzer.name", "reprise picks the parser with analyzer.format (json, gor or combined)"),
    (
        "analyzer.handler",
        "Havok's record handlers are built in: reprise parses method, URL, headers and body itself",
    ),
    (
        "reporter.style",
        "reprise prints its own terminal table and writes --report-json, --report-csv and --report-html",
    ),
];

/// Why a key unknown to reprise is a Havok key it ignores, or `None` for a real unknown key.
pub fn ignored_havok_key(path: &str) -> Option<&'static str> {
    HAVOK_ONLY.iter().find_map(|(key, why)| {
        let under = path.strip_prefix(key).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
        under.then_some(*why)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn havok_tables_cover_their_keys_and_nothing_else() {
        assert!(ignored_havok_key("analyzer.handler").is_some());
        assert!(ignored_havok_key("analyzer.handler.enable").is_some());
        assert!(ignored_havok_key("fetcher.sls.logstore").is_some());
        assert!(ignored_havok_key("analyzer.handlers").is_none(), "a prefix is not a match");
        assert!(ignored_havok_key("job.sped").is_none());
    }
}
