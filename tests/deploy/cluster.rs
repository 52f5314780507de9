//! A pod's view of the rendered manifests, for running its containers as local processes:
//! Secrets and ConfigMaps resolved, volumes as directories, cluster names as loopback ports.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

/// Objects by name, each a map of keys to values (Secrets, ConfigMaps).
pub type Named = HashMap<String, HashMap<String, String>>;

/// Where the containers of the rendered manifests find what the cluster would give them;
/// cloned per pod, whose mounts it then maps.
#[derive(Clone)]
pub struct Cluster {
    pub root: PathBuf,
    /// Secret name → key → value.
    pub secrets: Named,
    /// ConfigMap name (as the pods name it, with its hash) → key → value.
    pub configmaps: Named,
    /// Text in args and env replaced by its local counterpart: a Service's `name:port`, the
    /// target's `host:port`, volume mount paths.
    pub names: Vec<(String, String)>,
}

impl Cluster {
    pub fn local(&self, text: &str) -> String {
        self.names.iter().fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
    }

    /// A container's args, with the names this pod sees replaced by their local counterparts.
    pub fn args(&self, container: &Value) -> Vec<String> {
        let args = container["args"].as_array().expect("args").iter();
        args.map(|a| self.local(a.as_str().expect("arg"))).collect()
    }

    /// A pod's volumes as directories; adds their mount paths to `names`.
    pub fn mount(&mut self, pod: &str, spec: &Value, container: &Value) {
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let vol = spec["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == m["name"]))
                .expect("a mount's volume");
            // The pod's file system under a directory of its own, laid out as in the
            // container: the job file's relative paths reach the other mounts.
            let path = m["mountPath"].as_str().expect("mountPath").to_owned();
            let dir = self.root.join(pod).join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).expect("dir");
            let files: Vec<(String, String)> = if let Some(cm) = vol["configMap"]["name"].as_str() {
                self.configmaps[cm].iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            } else if let Some(secret) = vol["secret"]["secretName"].as_str() {
                let data = &self.secrets[secret];
                match vol["secret"]["items"].as_array() {
                    Some(items) => items
                        .iter()
                        .map(|i| {
                            let key = i["key"].as_str().expect("key");
                            (i["path"].as_str().expect("path").to_owned(), data[key].clone())
                        })
                        .collect(),
                    None => data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                }
            } else {
                assert!(vol.get("emptyDir").is_some(), "a volume this test cannot give: {vol}");
                Vec::new()
            };
            for (file, text) in files {
                std::fs::write(dir.join(file), text).expect("write");
            }
            self.names.push((path, dir.display().to_string()));
        }
    }

    /// A container's environment, its references resolved (a missing optional one is left out).
    pub fn env(&self, container: &Value) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().expect("env name").to_owned();
            let from = &e["valueFrom"];
            let value = if let Some(v) = e["value"].as_str() {
                Some(v.to_owned())
            } else if let Some(r) = from.get("secretKeyRef") {
                let v = self
                    .secrets
                    .get(r["name"].as_str().expect("name"))
                    .and_then(|s| s.get(r["key"].as_str().expect("key")));
                assert!(v.is_some() || r["optional"] == true, "{name}: no such secret key: {r}");
                v.cloned()
            } else if let Some(r) = from.get("configMapKeyRef") {
                Some(
                    self.configmaps[r["name"].as_str().expect("name")][r["key"].as_str().expect("key")]
                        .clone(),
                )
            } else {
                panic!("{name}: a value this test cannot give: {e}");
            };
            if let Some(v) = value {
                env.push((name, self.local(&v)));
            }
        }
        env
    }
}
