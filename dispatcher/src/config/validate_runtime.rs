//! Checks of how the job runs: credits and timeouts of `[proxy]`, `[replayer]`, and what
//! `[proxy] ordered` needs of the rest of the file.

use super::validate::Problem;
use super::{HashStrategy, JobConfig};

impl JobConfig {
    pub(super) fn validate_runtime(&self, p: &mut Vec<Problem>) {
        if self.proxy.credit_window < 16 {
            p.push(Problem::new(
                "proxy.credit_window",
                self.proxy.credit_window,
                "must be at least 16 records",
            ));
        }
        if self.proxy.heartbeat_timeout.0 < std::time::Duration::from_millis(1500) {
            p.push(Problem::new(
                "proxy.heartbeat_timeout",
                format!("{:?}", self.proxy.heartbeat_timeout.0),
                "must be at least 1.5s (replayers report every second)",
            ));
        }
        if self.proxy.drain_timeout.0 < std::time::Duration::from_secs(3) {
            p.push(Problem::new(
                "proxy.drain_timeout",
                format!("{:?}", self.proxy.drain_timeout.0),
                "must be at least 3s (replayers give requests in flight 2s before cutting them)",
            ));
        }
        if self.replayer.concurrency == 0 {
            p.push(Problem::new("replayer.concurrency", 0, "must be at least 1"));
        }
        if self.replayer.timeout.0.is_zero() {
            p.push(Problem::new("replayer.timeout", "0", "must be longer than zero"));
        }
        self.validate_tls(p);
        self.validate_order(p);
    }

    /// `[replayer]`'s HTTP/2 and TLS settings (the files are read when the plan is made).
    fn validate_tls(&self, p: &mut Vec<Problem>) {
        let r = &self.replayer;
        if !(1..=1 << 20).contains(&r.max_streams) {
            p.push(Problem::new("replayer.max_streams", r.max_streams, "must be from 1 to 1048576"));
        }
        if r.insecure_tls && r.target_ca.is_some() {
            p.push(Problem::new(
                "replayer.target_ca",
                r.target_ca.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                "trusts some CAs, but insecure_tls trusts any certificate: keep one of the two",
            ));
        }
        if r.client_cert.is_some() != r.client_key.is_some() {
            let (key, missing) = if r.client_cert.is_some() {
                ("replayer.client_cert", "client_key")
            } else {
                ("replayer.client_key", "client_cert")
            };
            p.push(Problem::new(key, "…", &format!("needs {missing} too (a certificate and its key)")));
        }
    }

    /// `[proxy] ordered` orders each key's requests at the one replayer the key goes to.
    fn validate_order(&self, p: &mut Vec<Problem>) {
        let proxy = &self.proxy;
        if proxy.order_timeout.0.is_zero() {
            p.push(Problem::new("proxy.order_timeout", "0", "must be longer than zero"));
        }
        if !proxy.ordered {
            return;
        }
        if self.analyzer.hash_field.is_none() {
            p.push(Problem::new(
                "proxy.ordered",
                true,
                "needs a key to order by: set [analyzer] hash_field (e.g. \"header:X-Session\" or \"json:user\")",
            ));
        }
        if proxy.hash == HashStrategy::RoundRobin {
            p.push(Problem::new(
                "proxy.ordered",
                true,
                "needs [proxy] hash = \"fnv\" or \"consistent\", so each key's requests reach one replayer",
            ));
        }
    }
}
