//! Who may talk to the dispatcher. Replayers present the replayer token on Subscribe and
//! Report (gRPC metadata `authorization: Bearer …`); admin clients present the admin token
//! (`Authorization: Bearer …`, or the live page's cookie, [`COOKIE`]) on every endpoint but
//! `/healthz`, the live page's own files and its login, and `/metrics` unless `[service]
//! metrics_auth` asks for it. A missing or wrong token is refused (gRPC
//! UNAUTHENTICATED, HTTP 401) and counted ([`crate::refusals`]); tokens are compared in
//! constant time and never printed.
//!
//! A state-changing admin request (any method but GET, HEAD and OPTIONS) that a browser
//! sent for a page of another site is refused (HTTP 403), with or without tokens: its
//! `Sec-Fetch-Site` is `cross-site` or `same-site`, or its `Origin` names another host
//! than the request's `Host`. Otherwise any page a user visits could post a form to
//! `http://127.0.0.1:…/job/stop`. Clients that are not browsers (curl, scripts) send
//! neither header and are not affected.
//!
//! Safe by default ([`Access::check_exposure`]): a port that listens beyond loopback needs
//! its token, or the dispatcher refuses to start unless told `--insecure` on purpose.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::refusals::{Refusal, Refusals};

/// A shared secret: compared in constant time, never printed (`Debug` shows `<redacted>`).
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Text that cannot be a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0} is set but empty; set a secret of at least 16 characters, or unset it")]
    Empty(&'static str),
    #[error(
        "{0} holds characters a header cannot carry (only visible ASCII, no spaces); use e.g. the output of `openssl rand -hex 32`"
    )]
    NotVisibleAscii(&'static str),
}

impl Token {
    /// A token from the variable `name` holds (`name` is for the error only).
    pub fn new(name: &'static str, value: &str) -> Result<Token, TokenError> {
        if value.is_empty() {
            return Err(TokenError::Empty(name));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotVisibleAscii(name));
        }
        Ok(Token(value.as_bytes().into()))
    }

    /// Whether an `Authorization` value is `Bearer <this token>`. The comparison of the
    /// token takes the same time wherever the first difference is (only its length shows).
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(bearer) else { return false };
        bool::from(presented.ct_eq(&self.0))
    }

    /// Whether a `Cookie` header among `headers` holds this token as the live page keeps it
    /// ([`COOKIE`], hex-encoded), compared as [`Token::admits`] does.
    pub fn admits_cookie(&self, headers: &HeaderMap) -> bool {
        let mut presented = None;
        for value in headers.get_all(header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                if let Some(hex) = pair.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')) {
                    presented = unhex(hex);
                }
            }
        }
        presented.is_some_and(|p| bool::from(p.as_slice().ct_eq(&self.0)))
    }

    /// The header value a client sends: `Bearer <token>`.
    pub fn bearer_value(&self) -> Vec<u8> {
        [b"Bearer ".as_slice(), &self.0].concat()
    }
}

/// The cookie in which the live page keeps the admin token (`HttpOnly`, `SameSite=Strict`).
pub const COOKIE: &str = "reprise_admin";

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The token of a `Bearer` credential (scheme case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii())
}

/// What the servers require of callers.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Required on Subscribe and Report when set.
    pub replayer_token: Option<Token>,
    /// Required on the admin API (but `/healthz`, and `/metrics` unless `metrics_auth`) when set.
    pub admin_token: Option<Token>,
    /// Serve ports beyond loopback without their tokens, on purpose.
    pub insecure: bool,
}

/// The variables the tokens come from (on the dispatcher and on replayers).
pub const REPLAYER_TOKEN_VAR: &str = "REPRISE_REPLAYER_TOKEN";
pub const ADMIN_TOKEN_VAR: &str = "REPRISE_ADMIN_TOKEN";

#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve {ports} without {missing}: anyone who can reach it could {harm}. Set {missing} (the replayer token on the replayers too), listen on 127.0.0.1, or pass --insecure to serve unauthenticated on purpose"
)]
pub struct Exposed {
    ports: String,
    missing: String,
    harm: &'static str,
}

impl Access {
    /// Refuses a port listening beyond loopback without its token (unless `insecure`).
    /// `grpc` is `None` when no gRPC port is served (`reprise run`).
    pub fn check_exposure(&self, grpc: Option<SocketAddr>, http: SocketAddr) -> Result<(), Exposed> {
        let grpc_open = grpc.is_some_and(|g| !g.ip().is_loopback()) && self.replayer_token.is_none();
        let grpc = grpc.map_or_else(|| "none".to_owned(), |g| g.to_string());
        let http_open = !http.ip().is_loopback() && self.admin_token.is_none();
        if self.insecure && (grpc_open || http_open) {
            tracing::warn!(%grpc, %http, "serving beyond loopback without a token (--insecure)");
        }
        let (ports, missing, harm) = match (grpc_open && !self.insecure, http_open && !self.insecure) {
            (false, false) => return Ok(()),
            (true, false) => (
                format!("gRPC on {grpc}"),
                REPLAYER_TOKEN_VAR.to_owned(),
                "subscribe as a replayer and receive the recorded requests, their cookies and tokens included",
            ),
            (false, true) => (
                format!("the admin API on {http}"),
                ADMIN_TOKEN_VAR.to_owned(),
                "stop, pause or speed up the job",
            ),
            (true, true) => (
                format!("gRPC on {grpc} and the admin API on {http}"),
                format!("{REPLAYER_TOKEN_VAR} and {ADMIN_TOKEN_VAR}"),
                "receive the recorded requests (their cookies and tokens included) or steer the job",
            ),
        };
        Err(Exposed { ports, missing, harm })
    }
}

/// The admin API's gate (an axum middleware over the whole router).
#[derive(Clone)]
pub(super) struct AdminGate {
    pub refusals: Arc<Refusals>,
    pub token: Option<Token>,
    pub metrics_auth: bool,
}

pub(super) async fn admin_gate(State(gate): State<AdminGate>, req: Request, next: Next) -> Response {
    if changes_state(req.method()) && is_cross_site(req.headers()) {
        gate.refusals.count(Refusal::CrossSite);
        tracing::warn!(path = %req.uri().path(), "admin request refused: sent by a page of another site");
        let body = axum::Json(serde_json::json!({
            "error": "a page of another site may not change the job: send this request from the same origin as the admin API, or from a client that is not a browser (curl, a script)"
        }));
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    let Some(token) = &gate.token else { return next.run(req).await };
    let open = match req.uri().path() {
        // The page and its assets hold no data; /session and /login check the token themselves.
        "/healthz" | "/" | "/live.js" | "/live.css" | "/favicon.ico" | "/session" | "/login" | "/logout" => {
            true
        }
        "/metrics" => !gate.metrics_auth,
        _ => false,
    };
    let headers = req.headers();
    if open
        || token.admits(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
        || token.admits_cookie(headers)
    {
        return next.run(req).await;
    }
    gate.refusals.count(Refusal::AdminToken);
    tracing::warn!(path = %req.uri().path(), "admin request refused: missing or wrong admin token");
    let body = axum::Json(serde_json::json!({
        "error": format!("this endpoint needs `Authorization: Bearer <token>` with the dispatcher's {ADMIN_TOKEN_VAR}")
    }));
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a browser sent this request for a page of another site. `Sec-Fetch-Site` is
/// what browsers set and pages cannot; `Origin` covers browsers without it. A request
/// with neither is not from a page's script or form.
fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    // `null` (a sandboxed page, a file://) is another site too.
    let authority =
        origin.as_bytes().strip_prefix(b"http://").or_else(|| origin.as_bytes().strip_prefix(b"https://"));
    match (authority, host) {
        (Some(authority), Some(host)) => !authority.eq_ignore_ascii_case(host),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_of_another_site_are_cross_site() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let host = ("host", "127.0.0.1:8080");
        assert!(!is_cross_site(&headers(&[host])), "curl sends neither header");
        assert!(!is_cross_site(&headers(&[host, ("origin", "http://127.0.0.1:8080")])));
        assert!(!is_cross_site(&headers(&[host, ("sec-fetch-site", "same-origin")])));
        assert!(!is_cross_site(&headers(&[host, ("sec-fetch-site", "none")])), "typed in the address bar");
        assert!(is_cross_site(&headers(&[host, ("origin", "http://evil.example")])));
        assert!(is_cross_site(&headers(&[host, ("origin", "http://127.0.0.1:9999")])));
        assert!(is_cross_site(&headers(&[host, ("origin", "null")])));
        assert!(is_cross_site(&headers(&[("origin", "http://127.0.0.1:8080")])), "no Host to match");
        assert!(is_cross_site(&headers(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(
            is_cross_site(&headers(&[host, ("sec-fetch-site", "same-site")])),
            "another port is another origin"
        );
        assert!(
            changes_state(&Method::POST) && changes_state(&Method::DELETE) && !changes_state(&Method::GET)
        );
    }

    fn token(s: &str) -> Token {
        Token::new("T", s).expect("token")
    }

    #[test]
    fn only_the_same_bearer_token_is_admitted() {
        let t = token("s3cret-token");
        assert!(t.admits(Some(b"Bearer s3cret-token")));
        assert!(t.admits(Some(b"bearer s3cret-token")));
        assert!(!t.admits(Some(b"Bearer s3cret-tokeN")));
        assert!(!t.admits(Some(b"Bearer s3cret")));
        assert!(!t.admits(Some(b"Basic s3cret-token")));
        assert!(!t.admits(Some(b"s3cret-token")));
        assert!(!t.admits(None));
        assert_eq!(t.bearer_value(), b"Bearer s3cret-token");
        let cookies = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::COOKIE, HeaderValue::from_static(v));
            }
            h
        };
        let hex = super::super::live::hex(b"s3cret-token");
        let good: &'static str = Box::leak(format!("a=1; {COOKIE}={hex}; b=2").into_boxed_str());
        assert!(t.admits_cookie(&cookies(&[good])));
        assert!(t.admits_cookie(&cookies(&["x=y", good])), "in any Cookie header");
        assert!(!t.admits_cookie(&cookies(&["reprise_admin=s3cret-token"])), "hex only");
        assert!(!t.admits_cookie(&cookies(&["reprise_admin=7"])));
        assert!(!t.admits_cookie(&cookies(&["reprise_admin_x=00"])));
        assert!(!t.admits_cookie(&HeaderMap::new()));
    }

    #[test]
    fn a_token_never_shows_in_debug_and_must_be_header_safe() {
        assert_eq!(format!("{:?}", token("abc")), "Token(<redacted>)");
        assert!(matches!(Token::new("T", ""), Err(TokenError::Empty("T"))));
        assert!(matches!(Token::new("T", "a b"), Err(TokenError::NotVisibleAscii("T"))));
        assert!(matches!(Token::new("T", "a\nb"), Err(TokenError::NotVisibleAscii("T"))));
    }

    #[test]
    fn a_port_beyond_loopback_needs_its_token() {
        let lo: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:1".parse().expect("addr");
        let none = Access::default();
        assert!(none.check_exposure(Some(lo), lo).is_ok());
        assert!(none.check_exposure(None, lo).is_ok());
        let admin_only = none.check_exposure(None, any).expect_err("refused").to_string();
        assert!(
            admin_only.contains(ADMIN_TOKEN_VAR) && !admin_only.contains(REPLAYER_TOKEN_VAR),
            "{admin_only}"
        );
        let both = none.check_exposure(Some(any), any).expect_err("refused").to_string();
        assert!(both.contains(REPLAYER_TOKEN_VAR) && both.contains(ADMIN_TOKEN_VAR), "{both}");
        assert!(both.contains("--insecure"), "{both}");
        let grpc_only = none.check_exposure(Some(any), lo).expect_err("refused").to_string();
        assert!(
            grpc_only.contains(REPLAYER_TOKEN_VAR) && !grpc_only.contains(ADMIN_TOKEN_VAR),
            "{grpc_only}"
        );
        let with =
            Access { replayer_token: Some(token("a")), admin_token: Some(token("b")), insecure: false };
        assert!(with.check_exposure(Some(any), any).is_ok());
        assert!(Access { insecure: true, ..Access::default() }.check_exposure(Some(any), any).is_ok());
    }
}
