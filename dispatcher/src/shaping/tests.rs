//! The shaping rules on records whose expected result is known byte for byte.

use std::io::Write as _;

use bytes::Bytes;

use crate::accounting::Skipped;

use super::*;
use crate::config::JobConfig;
use crate::record::Text;

fn record(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Record {
    Record {
        ts: 0,
        method: method.into(),
        path: path.into(),
        host: Some("prod.example.com".into()),
        headers: headers
            .iter()
            .map(|(n, v)| (Text::from(*n), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        key: None,
        expected: None,
    }
}

fn job(sections: &str) -> (JobConfig, Shaping, Accounting) {
    let text = format!("[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"x\"\n{sections}");
    let cfg = JobConfig::parse(&text).unwrap_or_else(|p| panic!("valid: {p:#?}"));
    let shaping = Shaping::new(&cfg).expect("tables read");
    let acc = Accounting::new(crate::redact::Redactor::default(), Shaping::rule_names(&cfg));
    (cfg, shaping, acc)
}

fn headers(r: &Record) -> Vec<(String, String)> {
    r.headers.iter().map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned())).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[test]
fn rewrites_change_path_host_headers_query_and_json_in_order() {
    let (_, shaping, acc) = job(r#"
[[rewrite]]
name = "v2"
path = { from = "^/v1/(\\w+)/(\\d+)$", to = "/v2/${1}s/$2" }
set_host = "staging.example.com"
remove_headers = ["X-Forwarded-For"]
rename_headers = { "X-Old" = "X-New" }
set_headers = { "X-Env" = "staging", "Accept" = "application/json" }
remove_query = ["utm_source"]
set_query = { debug = "1" }

[[rewrite]]
name = "scrub"
when = { method = "POST" }
remove_json = ["/card/number"]
set_json = { "/user/email" = "qa@example.com", "/flags" = [1, true] }
"#);
    let r = record(
        "POST",
        "/v1/user/42?utm_source=mail&debug=0&a=b&debug=2",
        &[
            ("accept", "*/*"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Old", "o"),
            ("x-forwarded-for", "5"),
            ("Accept", "x"),
        ],
        r#"{"user": {"email": "a@b"}, "card": {"number": "4111", "exp": "12/30"}, "meta": {"n": 1.10}}"#,
    );
    let out = shaping.apply(r, &acc).expect("kept");
    assert_eq!(out.path, "/v2/users/42?debug=1&a=b");
    assert_eq!(out.host.as_deref(), Some("staging.example.com"));
    assert_eq!(
        headers(&out),
        pairs(&[("accept", "application/json"), ("X-New", "o"), ("X-Env", "staging")]),
        "set in the first one's place, repeats gone, new ones last"
    );
    assert_eq!(
        std::str::from_utf8(&out.body).expect("utf-8"),
        r#"{"user":{"email":"qa@example.com"},"card":{"exp":"12/30"},"meta":{"n": 1.10},"flags":[1,true]}"#,
        "objects on a pointer's way are written compact; the rest keeps its bytes"
    );
    let c = acc.counts();
    assert_eq!(c.rewrites["v2"], crate::accounting::RewriteCount { applied: 1, failed: 0 });
    assert_eq!(c.rewrites["scrub"], crate::accounting::RewriteCount { applied: 1, failed: 0 });

    let get = shaping.apply(record("GET", "/other", &[], ""), &acc).expect("kept");
    assert_eq!(get.path, "/other?debug=1", "no path match: only the query rule applies");
    assert_eq!(acc.counts().rewrites["scrub"].applied, 1, "`when` leaves a GET alone");
}

#[test]
fn a_rewrite_that_cannot_apply_is_counted_and_skips_only_when_told() {
    let (_, shaping, acc) = job(r#"
[[rewrite]]
name = "soft"
set_json = { "/a" = 1 }
set_headers = { "X-Seen" = "1" }

[[rewrite]]
name = "strict"
when = { path = "^/strict" }
remove_json = ["/secret"]
on_failure = "skip"
"#);
    let r = shaping.apply(record("POST", "/soft", &[], "a=1&b=2"), &acc).expect("sent");
    assert_eq!(&r.body[..], b"a=1&b=2", "the body stays");
    assert_eq!(headers(&r), pairs(&[("X-Seen", "1")]), "the rest of the rule applies");
    assert!(shaping.apply(record("POST", "/strict", &[], "<xml/>"), &acc).is_none(), "skipped");
    let kept = shaping
        .apply(record("GET", "/strict", &[], ""), &acc)
        .expect("an empty body has no field to fail on");
    assert_eq!(kept.path, "/strict");
    let c = acc.counts();
    assert_eq!((c.rewrites["soft"].applied, c.rewrites["soft"].failed), (3, 2));
    assert_eq!((c.rewrites["strict"].applied, c.rewrites["strict"].failed), (0, 1));
    assert_eq!(c.skipped.get(&Skipped::RewriteFailed), Some(&1), "only the strict rule's failure is a skip");
}

#[test]
fn set_host_clears_the_host_of_records_no_rule_gave_one() {
    let (cfg, shaping, acc) = job("[[rewrite]]\nwhen = { path = \"^/api/\" }\nset_host = \"api.staging\"\n");
    assert!(shaping.sends_host() && !cfg.replayer.preserve_host);
    assert_eq!(
        shaping.apply(record("GET", "/api/x", &[], ""), &acc).expect("kept").host.as_deref(),
        Some("api.staging")
    );
    assert_eq!(
        shaping.apply(record("GET", "/web", &[], ""), &acc).expect("kept").host,
        None,
        "the target's host"
    );
    let (_, shaping, acc) = job(
        "[replayer]\npreserve_host = true\n[[rewrite]]\nset_host = \"h\"\nwhen = { path = \"^/api/\" }\n",
    );
    assert_eq!(
        shaping.apply(record("GET", "/web", &[], ""), &acc).expect("kept").host.as_deref(),
        Some("prod.example.com"),
        "preserve_host keeps recorded hosts"
    );
}

fn table(name: &str, text: &str) -> tempfile::TempPath {
    let mut f = tempfile::Builder::new().suffix(name).tempfile().expect("temp file");
    f.write_all(text.as_bytes()).expect("written");
    f.into_temp_path()
}

#[test]
fn substitutes_map_headers_cookies_and_query_values_through_tables() {
    let csv = table(".csv", "# production,staging\nprodtok1,stagetok1\n\"a,b\" , c\nsess-1,sess-S\n");
    let json = table(".json", r#"{"q-prod": "q-stage"}"#);
    let (csv, json) = (csv.display(), json.display());
    let (_, shaping, acc) = job(&format!(
        r#"
[[substitute]]
name = "bearer"
header = "Authorization"
pattern = "^Bearer (.+)$"
table = "{csv}"
unmapped = "default"
default = "fallback"

[[substitute]]
name = "session"
cookie = "sid"
table = "{csv}"

[[substitute]]
name = "token"
query = "token"
table = "{json}"
unmapped = "drop"
"#
    ));
    let r = record(
        "GET",
        "/a?token=q-prod&x=1",
        &[
            ("authorization", "Bearer prodtok1"),
            ("Cookie", "theme=dark; sid=sess-1;other=a,b"),
            ("Authorization", "Bearer nope"),
        ],
        "",
    );
    let out = shaping.apply(r, &acc).expect("kept");
    assert_eq!(out.path, "/a?token=q-stage&x=1");
    assert_eq!(
        headers(&out),
        pairs(&[
            ("authorization", "Bearer stagetok1"),
            ("Cookie", "theme=dark; sid=sess-S;other=a,b"),
            ("Authorization", "Bearer fallback"),
        ])
    );
    let basic =
        shaping.apply(record("GET", "/b", &[("Authorization", "Basic eA==")], ""), &acc).expect("kept");
    assert_eq!(headers(&basic), pairs(&[("Authorization", "fallback")]), "no pattern match: the whole value");
    assert!(shaping.apply(record("GET", "/c?token=unknown", &[], ""), &acc).is_none(), "dropped");
    let c = acc.counts();
    assert_eq!((c.substitutes["bearer"].replaced, c.substitutes["bearer"].unmapped), (1, 2));
    assert_eq!((c.substitutes["session"].replaced, c.substitutes["session"].unmapped), (1, 0));
    assert_eq!((c.substitutes["token"].replaced, c.substitutes["token"].unmapped), (1, 1));
    assert_eq!(c.skipped.get(&Skipped::Unmapped), Some(&1));
}

#[test]
fn a_bad_table_names_its_line_and_never_a_value() {
    let cases = [
        (".csv", "good,one\nsecret-prod-value,x,y\n", "line 2 has 3 fields"),
        (".csv", "k,v1\nk,v2\n", "line 2 maps the production value of line 1 to another"),
        (".csv", "# only a comment\n", "holds no values"),
        (".json", r#"{"secret-prod-value": 12345}"#, "line 1 column"),
    ];
    for (ext, text, want) in cases {
        let t = table(ext, text);
        let cfg = JobConfig::parse(&format!(
            "[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"x\"\n[[substitute]]\nheader = \"X-Key\"\ntable = \"{}\"\n",
            t.display()
        ))
        .expect("valid");
        let e = Shaping::new(&cfg).expect_err("a bad table");
        assert_eq!(e.len(), 1, "{e:?}");
        let e = e[0].to_string();
        assert!(e.starts_with("substitute[0].table = ") && e.contains(want), "{e}");
        // The table's random file name may hold "v2" by chance: only the rest is searched.
        let rest = e.replace(&t.display().to_string(), "");
        assert!(
            !rest.contains("secret-prod-value") && !rest.contains("12345") && !rest.contains("v2"),
            "no value: {e}"
        );
    }
    let cfg = JobConfig::parse(
        "[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"x\"\n[[substitute]]\nheader = \"X-Key\"\ntable = \"/nonexistent/t.csv\"\n",
    )
    .expect("valid");
    let e = Shaping::new(&cfg).expect_err("missing");
    assert!(e.len() == 1 && e[0].to_string().contains("cannot be read"), "{e:?}");
}
