//! Configuration: YAML text -> `raw` (serde shapes) -> `validate` (domain types, defaults,
//! every error with its field path). Loading happens before any port is bound; after that,
//! nothing reads configuration from a global: each task is handed the `Arc` it needs.

pub mod discovery;
mod errors;
pub mod fault;
mod raw;
pub mod tls;
mod validate;

use std::path::Path;

pub use validate::{
    compile_path_regex, Action, BackendConfig, Balance, BudgetConfig, Conditions, Config,
    ConfigError, ConfigErrors, Defaults, Downstream, FixedResponse, HeaderFilter,
    HealthCheckConfig, HostMatch, OutlierConfig, PathMatch, PathRegex, PathReplace, Protocol,
    Redirect, RetryOn, RetryPolicy, Rewrite, RouteConfig, ValueMatch, Warning, WeightedBackend,
};

use raw::RawConfig;

/// The flags of `hitless sidecar` beyond listen, upstream and admin: drain settings and the
/// app's protocol and TLS.
pub struct SidecarOptions {
    pub delay: String,
    pub timeout: String,
    pub control_socket: String,
    /// The app's protocol (`--upstream-protocol`) and TLS settings for https/grpcs.
    pub protocol: String,
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
}

impl Default for SidecarOptions {
    fn default() -> SidecarOptions {
        SidecarOptions {
            delay: "5s".into(),
            timeout: "20s".into(),
            control_socket: Defaults::CONTROL_SOCKET.into(),
            protocol: "http".into(),
            ca_file: None,
            server_name: None,
        }
    }
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::from_yaml(&text)
    }

    /// Parse and validate YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            parse_yaml(text)?
        };
        validate::validate(raw)
    }

    /// The configuration `hitless sidecar` runs: one listener, one route to one backend.
    pub fn sidecar(
        listen: &str,
        upstream: &str,
        admin: Option<&str>,
        options: &SidecarOptions,
    ) -> Result<Config, ConfigErrors> {
        // Going through the same YAML path as a file keeps one set of defaults and checks;
        // serde_json's string quoting is valid YAML quoting.
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let admin = admin.unwrap_or(Defaults::ADMIN);
        let mut tls = Vec::new();
        if let Some(ca) = &options.ca_file {
            tls.push(format!("ca_file: {}", q(ca)));
        }
        if let Some(name) = &options.server_name {
            tls.push(format!("server_name: {}", q(name)));
        }
        let tls = if tls.is_empty() {
            String::new()
        } else {
            format!(", tls: {{{}}}", tls.join(", "))
        };
        let yaml = format!(
            "listeners: [{{bind: {}}}]\nadmin: {{bind: {}}}\nbackends:\n  app: {{endpoints: [{}], protocol: {}{tls}}}\nroutes:\n  - {{name: app, backend: app}}\ndrain: {{delay: {}, timeout: {}, control_socket: {}}}\n",
            q(listen),
            q(admin),
            q(upstream),
            q(&options.protocol),
            q(&options.delay),
            q(&options.timeout),
            q(&options.control_socket),
        );
        Config::from_yaml(&yaml).map_err(|errs| {
            // Name the flag, not the internal YAML path.
            ConfigErrors(
                errs.0
                    .into_iter()
                    .map(|e| ConfigError {
                        path: match e.path.as_str() {
                            "listeners[0].bind" => "--listen".into(),
                            "admin.bind" => "--admin".into(),
                            p if p.starts_with("backends.app.endpoints") => "--upstream".into(),
                            "drain.delay" => "--drain-delay".into(),
                            "backends.app.protocol" => "--upstream-protocol".into(),
                            "backends.app.tls.ca_file" => "--upstream-ca-file".into(),
                            "backends.app.tls.server_name" => "--upstream-server-name".into(),
                            "backends.app.tls" => "--upstream-ca-file".into(),
                            "drain.timeout" => "--drain-timeout".into(),
                            p => p.into(),
                        },
                        message: e.message,
                    })
                    .collect(),
            )
        })
    }
}

/// Deserialize with the failing field's path (`routes[2].timeouts.request`) in front of the
/// message, instead of only a line and column.
fn parse_yaml(text: &str) -> Result<RawConfig, ConfigErrors> {
    let mut failed_path: Option<String> = None;
    let options = serde_saphyr::options! { with_snippet: false };
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            failed_path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let path = failed_path.filter(|p| p != ".").unwrap_or_default();
        ConfigErrors(vec![ConfigError {
            path,
            message: clean_message(&e.to_string()),
        }])
    })
}

/// serde-saphyr prefixes messages with a location; keep the message first and the
/// location after it, on one line.
fn clean_message(message: &str) -> String {
    let one_line: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    one_line.join(" ")
}

/// The effective configuration with every default filled in, as YAML (for `hitless check`).
pub fn effective_yaml(config: &Config) -> String {
    use serde_json::{json, Map, Value};
    let d = |d: std::time::Duration| Value::String(humantime::format_duration(d).to_string());
    let backends: Map<String, Value> = config
        .backends
        .iter()
        .map(|b| {
            let mut v = json!({
                "endpoints": b.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                "protocol": b.protocol.as_str(),
                "balance": b.balance.as_str(),
                "connect_timeout": d(b.connect_timeout),
                "pool": {
                    "idle_timeout": d(b.pool_idle_timeout),
                    "max_idle_per_endpoint": b.max_idle_per_endpoint,
                },
                "retry_budget": {
                    "ratio": b.retry_budget.ratio,
                    "min_per_second": b.retry_budget.min_per_second,
                },
                "outlier": {
                    "consecutive_failures": b.outlier.consecutive_failures,
                    "base_ejection": d(b.outlier.base_ejection),
                    "max_ejection": d(b.outlier.max_ejection),
                    "max_ejected_percent": b.outlier.max_ejected_percent,
                },
                "hold_timeout": d(b.hold_timeout),
                "max_concurrent_requests": b.max_concurrent_requests,
                "slow_start": d(b.slow_start),
            });
            if let (Some(discovery), Some(obj)) = (&b.discovery, v.as_object_mut()) {
                use discovery::Discovery;
                obj.remove("endpoints");
                let value = match discovery {
                    Discovery::Dns(dns) => json!({"dns": {
                        "name": format!("{}:{}", dns.host, dns.port),
                        "min_ttl": d(dns.min_ttl),
                        "max_ttl": d(dns.max_ttl),
                        "nameservers": dns.nameservers.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    }}),
                    Discovery::Kubernetes(k) => json!({"kubernetes": {
                        "service": k.service,
                        "namespace": k.namespace,
                        "port": match &k.port {
                            Some(discovery::PortRef::Number(n)) => json!(n),
                            Some(discovery::PortRef::Name(name)) => json!(name),
                            None => Value::Null,
                        },
                        "kubeconfig": k.kubeconfig.as_ref().map(|p| p.display().to_string()),
                    }}),
                };
                obj.insert("discovery".into(), value);
            }
            if let (Some(t), Some(obj)) = (&b.tls, v.as_object_mut()) {
                let mut tls = json!({
                    "ca_file": t.ca_file.as_ref().map(|p| p.display().to_string()),
                    "insecure_skip_verify": t.insecure_skip_verify,
                });
                if let (Some(name), Some(o)) = (&t.server_name, tls.as_object_mut()) {
                    o.insert("server_name".into(), json!(name));
                }
                obj.insert("tls".into(), tls);
            }
            if let (Some(h), Some(obj)) = (&b.health_check, v.as_object_mut()) {
                obj.insert(
                    "health_check".into(),
                    json!({
                        "path": h.path,
                        "interval": d(h.interval),
                        "timeout": d(h.timeout),
                        "healthy_threshold": h.healthy_threshold,
                        "unhealthy_threshold": h.unhealthy_threshold,
                    }),
                );
            }
            if let (Some(k), Some(obj)) = (b.upstream_keepalive_timeout, v.as_object_mut()) {
                obj.insert("upstream_keepalive_timeout".into(), d(k));
            }
            (b.name.clone(), v)
        })
        .collect();
    let drain = json!({
        "delay": d(config.drain.delay),
        "timeout": d(config.drain.timeout),
        "control_socket": config.drain.control_socket.display().to_string(),
        "grace_period": d(config.drain.grace_period.unwrap_or(Defaults::GRACE_PERIOD)),
    });
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            let mut m = Map::new();
            match &r.host {
                Some(HostMatch::Exact(h)) => {
                    m.insert("host".into(), json!(h));
                }
                Some(HostMatch::Suffix(s)) => {
                    m.insert("host".into(), json!(format!("*{s}")));
                }
                None => {}
            }
            match &r.path {
                PathMatch::Prefix(p) => m.insert("path_prefix".into(), json!(p)),
                PathMatch::Exact(p) => m.insert("path".into(), json!(p)),
                PathMatch::Regex(r) => m.insert("path_regex".into(), json!(r.0.as_str())),
            };
            if !r.listener_ports.is_empty() {
                m.insert("listener_ports".into(), json!(r.listener_ports));
            }
            conditions_json(&r.conditions, &mut m);
            let mut route = json!({
                "name": r.name,
                "match": m,
                "timeouts": {
                    "request": d(r.request_timeout),
                    "backend_request": d(r.backend_request_timeout),
                },
                "retry": {
                    "attempts": r.retry.attempts,
                    "on": r.retry.on.names(),
                    "idempotent": r.retry.idempotent,
                    "max_replay_bytes": r.retry.max_replay_bytes,
                },
            });
            let percent = |s: fault::Share| f64::from(s.0) / 10_000.0;
            if let (Some(obj), Some(m)) = (route.as_object_mut(), &r.mirror) {
                let backend = config.backends.get(m.backend).map(|b| b.name.as_str());
                obj.insert(
                    "mirror".into(),
                    json!({"backend": backend, "percent": percent(m.share)}),
                );
            }
            if let (Some(obj), Some(f)) = (route.as_object_mut(), &r.fault) {
                let mut fault = Map::new();
                if let Some((status, share)) = f.abort {
                    fault.insert(
                        "abort".into(),
                        json!({"status": status.as_u16(), "percent": percent(share)}),
                    );
                }
                if let Some((duration, share)) = f.delay {
                    fault.insert(
                        "delay".into(),
                        json!({"duration": d(duration), "percent": percent(share)}),
                    );
                }
                if let Some(share) = f.reset {
                    fault.insert("reset".into(), json!({"percent": percent(share)}));
                }
                fault.insert("header".into(), json!(f.header));
                if let Some(seed) = f.seed {
                    fault.insert("seed".into(), json!(seed));
                }
                obj.insert("fault".into(), Value::Object(fault));
            }
            if let Some(obj) = route.as_object_mut() {
                route_changes_json(config, r, obj);
                match &r.action {
                    // Written by route_changes_json.
                    Action::Split(_) | Action::Redirect(_) => {}
                    Action::Forward { backend } => {
                        obj.insert("backend".into(), json!(config.backends[*backend].name));
                    }
                    Action::Respond(f) => {
                        let headers: Map<String, Value> = f
                            .headers
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes())))
                            })
                            .collect();
                        obj.insert(
                            "respond".into(),
                            json!({
                                "status": f.status.as_u16(),
                                "headers": headers,
                                "body": String::from_utf8_lossy(&f.body),
                            }),
                        );
                    }
                }
            }
            route
        })
        .collect();
    let mut timeouts = json!({
        "idle": d(config.downstream.idle),
        "header_read": d(config.downstream.header_read),
        "tunnel_idle": d(config.downstream.tunnel_idle),
    });
    if let (Some(c), Some(obj)) = (config.client_timeout, timeouts.as_object_mut()) {
        obj.insert("client".into(), d(c));
    }
    let mut root = json!({
        "listeners": config.listeners.iter().zip(&config.listener_tls).zip(&config.listener_ports).map(|((l, tls), port)| {
            let mut v = json!({"bind": l.to_string()});
            if *port != l.port() {
                v["public_port"] = json!(port);
            }
            if let (Some(tls), Some(obj)) = (tls, v.as_object_mut()) {
                let certs: Vec<Value> = tls.certificates.iter().map(|c| json!({
                    "cert": c.cert.display().to_string(),
                    "key": c.key.display().to_string(),
                    "server_names": c.server_names,
                })).collect();
                let mut tls_value = json!({"certificates": certs});
                if tls.self_signed {
                    tls_value["self_signed"] = json!(true);
                }
                obj.insert("tls".into(), tls_value);
            }
            v
        }).collect::<Vec<_>>(),
        "admin": {"bind": config.admin.to_string()},
        "timeouts": timeouts,
        "limits": {
            "max_request_header_bytes": config.downstream.max_request_header_bytes,
            "max_response_header_bytes": config.max_response_header_bytes,
            "keep_underscore_headers": config.downstream.keep_underscore_headers,
            "max_connections": config.downstream.max_connections,
            "listen_backlog": config.downstream.listen_backlog,
        },
        "access_log": config.access_log,
        "backends": backends,
        "routes": routes,
        "drain": drain,
    });
    if let Some(obj) = root.as_object_mut() {
        let mut runtime = json!({"direct_path": config.direct_path});
        if let (Some(n), Some(r)) = (config.worker_threads, runtime.as_object_mut()) {
            r.insert("worker_threads".into(), json!(n));
        }
        obj.insert("runtime".into(), runtime);
    }
    serde_saphyr::to_string(&root).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
}
/// `match.scheme`, `match.method`, `match.headers`, `match.query` of the effective configuration.
fn conditions_json(c: &Conditions, m: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::json;
    if let Some(scheme) = c.scheme {
        m.insert("scheme".into(), json!(scheme));
    }
    if let Some(method) = &c.method {
        m.insert("method".into(), json!(method.as_str()));
    }
    let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let condition = |name: &str, value: Result<String, &PathRegex>| match value {
        Ok(v) => json!({"name": name, "value": v}),
        Err(p) => json!({"name": name, "pattern": p.0.as_str()}),
    };
    if !c.headers.is_empty() {
        let headers: Vec<_> = c
            .headers
            .iter()
            .map(|(n, v)| match v {
                ValueMatch::Exact(v) => condition(n.as_str(), Ok(text(v))),
                ValueMatch::Pattern(p) => condition(n.as_str(), Err(p)),
            })
            .collect();
        m.insert("headers".into(), json!(headers));
    }
    if !c.query.is_empty() {
        let query: Vec<_> = c
            .query
            .iter()
            .map(|(n, v)| match v {
                ValueMatch::Exact(v) => condition(n, Ok(v.clone())),
                ValueMatch::Pattern(p) => condition(n, Err(p)),
            })
            .collect();
        m.insert("query".into(), json!(query));
    }
}

/// A route's split, redirect, header filters and rewrite in the effective configuration.
fn route_changes_json(
    config: &Config,
    r: &RouteConfig,
    obj: &mut serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::{json, Map, Value};
    let name = |i: usize| {
        config
            .backends
            .get(i)
            .map(|b| b.name.as_str())
            .unwrap_or("-")
    };
    if let Action::Split(split) = &r.action {
        let split: Vec<_> = split
            .iter()
            .map(|w| json!({"name": name(w.backend), "weight": w.weight}))
            .collect();
        obj.insert("backends".into(), json!(split));
    }
    let path = |m: &mut Map<String, Value>, p: &Option<PathReplace>| match p {
        Some(PathReplace::Full(p)) => m.insert("path".into(), json!(p)),
        Some(PathReplace::Prefix(p)) => m.insert("path_prefix".into(), json!(p)),
        None => None,
    };
    if let Action::Redirect(redirect) = &r.action {
        let mut m = Map::new();
        if let Some(scheme) = redirect.scheme {
            m.insert("scheme".into(), json!(scheme));
        }
        if let Some(host) = &redirect.host {
            m.insert("host".into(), json!(host));
        }
        if let Some(port) = redirect.port {
            m.insert("port".into(), json!(port));
        }
        path(&mut m, &redirect.path);
        m.insert("status".into(), json!(redirect.status.as_u16()));
        obj.insert("redirect".into(), Value::Object(m));
    }
    let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let filter = |f: &HeaderFilter| {
        let pairs = |list: &[(http::HeaderName, http::HeaderValue)]| -> Map<String, Value> {
            list.iter()
                .map(|(n, v)| (n.to_string(), json!(text(v))))
                .collect()
        };
        let remove: Vec<&str> = f.remove.iter().map(|n| n.as_str()).collect();
        json!({"set": pairs(&f.set), "add": pairs(&f.add), "remove": remove})
    };
    if !r.request_headers.is_empty() {
        obj.insert("request_headers".into(), filter(&r.request_headers));
    }
    if !r.response_headers.is_empty() {
        obj.insert("response_headers".into(), filter(&r.response_headers));
    }
    if let Some(rewrite) = &r.rewrite {
        let mut m = Map::new();
        if let Some(host) = &rewrite.host {
            m.insert("host".into(), json!(text(host)));
        }
        path(&mut m, &rewrite.path);
        obj.insert("rewrite".into(), Value::Object(m));
    }
}

#[cfg(test)]
mod tests;
