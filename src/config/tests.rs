//! Config errors name the field path; defaults are filled in; the chain check warns.

use super::*;

fn errors(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const BASE: &str = "backends:\n  api: {endpoints: [\"127.0.0.1:9000\"]}\n";

#[test]
fn duration_without_unit_names_the_path() {
    let yaml = format!(
        "{BASE}routes:\n  - backend: api\n  - backend: api\n  - backend: api\n    timeouts: {{request: 5}}\n"
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .starts_with("routes[2].timeouts.request: expected a duration like \"5s\", got \"5\""),
        "{}",
        errs[0]
    );
}

#[test]
fn bad_duration_text_names_the_path() {
    let errs = errors(&format!(
        "{BASE}  web: {{endpoints: [], connect_timeout: fast}}\nroutes: [{{backend: api}}]\n"
    ));
    assert!(
        errs[0].starts_with(
            "backends.web.connect_timeout: expected a duration like \"5s\", got \"fast\""
        ),
        "{}",
        errs[0]
    );
}

#[test]
fn unknown_key_is_rejected_with_its_path() {
    let errs = errors(&format!(
        "{BASE}routes:\n  - backend: api\n    timeouts: {{requets: 5s}}\n"
    ));
    assert!(errs[0].starts_with("routes[0].timeouts"), "{}", errs[0]);
    assert!(errs[0].contains("requets"), "{}", errs[0]);
}

#[test]
fn semantic_errors_are_all_collected() {
    let yaml = r#"
listeners: [{bind: "nope"}]
backends:
  api:
    endpoints: ["127.0.0.1", "127.0.0.1:9000"]
    balance: fastest
routes:
  - backend: web
  - match: {host: "bad host!", path_prefix: api}
    backend: api
  - match: {path: /a, path_prefix: /b}
    backend: api
  - backend: api
    respond: {status: 200}
"#;
    let errs = errors(yaml);
    let expected_prefixes = [
        "listeners[0].bind: expected an address",
        "backends.api.endpoints[0]: expected \"host:port\"",
        "backends.api.balance: expected \"p2c\" or \"round_robin\", got \"fastest\"",
        "routes[0].backend: unknown backend \"web\" (defined: api)",
        "routes[1].match.host: expected a host name",
        "routes[1].match.path_prefix: must start with \"/\"",
        "routes[2].match: set one of path_prefix, path (exact) or path_regex",
        "routes[3]: a route needs exactly one of `backend`",
    ];
    for prefix in expected_prefixes {
        assert!(
            errs.iter().any(|e| e.starts_with(prefix)),
            "missing {prefix:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expected_prefixes.len(), "{errs:#?}");
}

#[test]
fn zero_timeouts_and_limits_are_rejected() {
    let errs = errors(&format!(
        "{BASE}timeouts: {{idle: 0s}}\nlimits: {{max_request_header_bytes: 10}}\nroutes: [{{backend: api}}]\n"
    ));
    assert!(errs
        .iter()
        .any(|e| e.starts_with("timeouts.idle: must be greater than zero")));
    assert!(errs
        .iter()
        .any(|e| e.starts_with("limits.max_request_header_bytes: must be between 8192")));
}

#[test]
fn defaults_are_filled_in() {
    let c = Config::from_yaml(&format!("{BASE}routes: [{{backend: api}}]\n")).unwrap();
    assert_eq!(c.listeners, vec!["0.0.0.0:8080".parse().unwrap()]);
    assert_eq!(c.admin, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.routes[0].request_timeout, Defaults::REQUEST);
    assert_eq!(
        c.routes[0].backend_request_timeout,
        Defaults::BACKEND_REQUEST
    );
    assert_eq!(c.backends[0].connect_timeout, Defaults::CONNECT);
    assert_eq!(c.backends[0].pool_idle_timeout, Defaults::POOL_IDLE);
    assert_eq!(c.backends[0].balance, Balance::P2c);
    assert_eq!(c.downstream.idle, Defaults::IDLE);
    assert!(c.access_log);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let yaml = effective_yaml(&c);
    assert!(yaml.contains("idle_timeout: 1s 500ms"), "{yaml}");
    // The effective config is itself a valid config.
    Config::from_yaml(&yaml).unwrap();
}

#[test]
fn inverted_timeout_chain_is_warned_with_the_fix() {
    let yaml = r#"
timeouts: {client: 20s}
backends:
  api:
    endpoints: ["127.0.0.1:9000"]
    connect_timeout: 5s
    upstream_keepalive_timeout: 1s
routes:
  - name: slow
    backend: api
    timeouts: {request: 30s, backend_request: 40s}
  - name: shadowed
    match: {path_prefix: /x}
    backend: api
"#;
    let c = Config::from_yaml(yaml).unwrap();
    let w: Vec<String> = c.warnings().iter().map(|w| w.to_string()).collect();
    let has = |s: &str| w.iter().any(|x| x.contains(s));
    assert!(has("routes[0].timeouts.backend_request: per-try timeout 40s exceeds the request timeout 30s"), "{w:#?}");
    assert!(
        has(
            "routes[0].timeouts.request: request timeout 30s is not below the clients' timeout 20s"
        ),
        "{w:#?}"
    );
    assert!(has("backends.api.pool.idle_timeout: pooled connections idle up to 1s 500ms but the upstream closes them after 1s"), "{w:#?}");
    assert_eq!(w.len(), 5, "each problem once: {w:#?}");
    assert!(has("routes[1].match: never matches: routes[0]"), "{w:#?}");
}

#[test]
fn sidecar_flags_errors_name_the_flag() {
    let e =
        Config::sidecar("nope", "127.0.0.1:3000", None, &SidecarOptions::default()).unwrap_err();
    assert!(e.to_string().starts_with("--listen: "), "{e}");
    let e = Config::sidecar("127.0.0.1:8080", "app", None, &SidecarOptions::default()).unwrap_err();
    assert!(e.to_string().starts_with("--upstream: "), "{e}");
    let spdy = SidecarOptions {
        protocol: "spdy".into(),
        ..SidecarOptions::default()
    };
    let e = Config::sidecar("127.0.0.1:8080", "127.0.0.1:3000", None, &spdy).unwrap_err();
    assert!(e.to_string().starts_with("--upstream-protocol: "), "{e}");
    let tls = SidecarOptions {
        protocol: "https".into(),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..SidecarOptions::default()
    };
    let e = Config::sidecar("127.0.0.1:8080", "127.0.0.1:3000", None, &tls).unwrap_err();
    assert!(
        e.to_string().starts_with("--upstream-ca-file: cannot read"),
        "{e}"
    );
    let c = Config::sidecar(
        "127.0.0.1:8080",
        "127.0.0.1:3000",
        None,
        &SidecarOptions::default(),
    )
    .unwrap();
    assert_eq!(c.routes.len(), 1);
    assert_eq!(
        c.backends[0].endpoints,
        vec!["127.0.0.1:3000".parse().unwrap()]
    );
}

#[test]
fn resilience_settings_are_validated_with_their_paths() {
    let yaml = r#"
retry: {max_replay_bytes: 99999999}
backends:
  api:
    endpoints: ["127.0.0.1:9000"]
    hold_timeout: 2s
    max_concurrent_requests: 0
    outlier: {consecutive_failures: 5000, base_ejection: 10s, max_ejection: 1s, max_ejected_percent: 101}
routes: [{backend: api}]
"#;
    let e = Config::from_yaml(yaml).unwrap_err().to_string();
    for path in [
        "retry.max_replay_bytes: must be at most 16777216",
        "backends.api.max_concurrent_requests: must be between 1 and 1000000, got 0",
        "backends.api.outlier.consecutive_failures: must be between 0 (off) and 1000",
        "backends.api.outlier.max_ejection: must be at least base_ejection (10s), got 1s",
        "backends.api.outlier.max_ejected_percent: must be between 0 and 100, got 101",
    ] {
        assert!(e.contains(path), "missing {path:?} in:\n{e}");
    }
    let hold_too_long = r#"
backends:
  api: {endpoints: ["127.0.0.1:9000"], hold_timeout: 40s}
routes: [{backend: api}]
"#;
    let c = Config::from_yaml(hold_too_long).unwrap();
    let w: Vec<String> = c.warnings().iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|x| x.contains("backends.api.hold_timeout: hold 40s is not below")),
        "{w:#?}"
    );
    // Defaults, as documented.
    let c = Config::from_yaml(&format!("{BASE}routes: [{{backend: api}}]\n")).unwrap();
    let b = &c.backends[0];
    assert_eq!(b.hold_timeout, Defaults::HOLD);
    assert_eq!(b.max_concurrent_requests, 1024);
    assert_eq!(b.outlier.consecutive_failures, 3);
    assert_eq!(c.routes[0].retry.max_replay_bytes, 64 * 1024);
}

#[test]
fn discovered_backends_survive_the_effective_config_round_trip() {
    use super::discovery::{Discovery, PortRef};
    let yaml = r#"
backends:
  a:
    discovery: {kubernetes: {service: cart, namespace: shop, port: 8080}}
  b:
    discovery: {kubernetes: {service: cart, port: http, kubeconfig: /k/config}}
  c:
    discovery: {dns: {name: "api.shop.svc.cluster.local.:8080", nameservers: ["10.96.0.10:53"]}}
routes:
  - backend: a
"#;
    let c = Config::from_yaml(yaml).unwrap();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let again = Config::from_yaml(&effective_yaml(&c)).unwrap();
    for (x, y) in c.backends.iter().zip(&again.backends) {
        assert_eq!(x.discovery, y.discovery, "{}", x.name);
    }
    match &c.backends[0].discovery {
        Some(Discovery::Kubernetes(k)) => assert_eq!(k.port, Some(PortRef::Number(8080))),
        other => panic!("{other:?}"),
    }
    match &c.backends[2].discovery {
        Some(Discovery::Dns(d)) => {
            assert_eq!(d.host, "api.shop.svc.cluster.local.");
            assert_eq!(
                (d.port, d.min_ttl, d.max_ttl),
                (
                    8080,
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(30)
                )
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fault_and_connection_settings_are_validated_with_their_paths() {
    let errs = errors(&format!(
        "{BASE}limits: {{max_connections: 99999999999, listen_backlog: 0}}\nroutes:\n  - backend: api\n    fault: {{abort: {{status: 99, percent: 5}}, delay: {{percent: 10}}, reset: {{percent: 101}}}}\n"
    ));
    for expected in [
        "limits.max_connections: must be at most 10000000",
        "limits.listen_backlog: must be between 1 and 65535",
        "routes[0].fault.abort.status: expected a status from 200 to 599, got 99",
        "routes[0].fault.delay.duration: missing",
        "routes[0].fault.reset.percent: expected a percentage from 0 to 100, got 101",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "{expected} not in {errs:#?}"
        );
    }
    let config = Config::from_yaml(&format!(
        "{BASE}routes:\n  - backend: api\n    fault: {{abort: {{status: 502, percent: 0.5}}, seed: 3}}\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let fault = config.routes[0]
        .fault
        .clone()
        .unwrap_or_else(|| panic!("no fault"));
    assert_eq!(
        fault.abort,
        Some((http::StatusCode::BAD_GATEWAY, fault::Share(5_000)))
    );
    assert!(fault.header);
    assert_eq!(fault.seed, Some(3));
    let again = Config::from_yaml(&effective_yaml(&config)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        again.routes[0].fault,
        Some(fault),
        "survives the effective config"
    );
}

const TWO: &str =
    "backends:\n  v1: {endpoints: [\"127.0.0.1:9001\"]}\n  v2: {endpoints: [\"127.0.0.1:9002\"]}\n";

/// Every expected error (by prefix) is among the errors of `routes`.
fn assert_route_errors(routes: &str, expected: &[&str]) {
    let errs = errors(&format!("{TWO}routes:\n{routes}"));
    for prefix in expected {
        assert!(
            errs.iter().any(|e| e.starts_with(prefix)),
            "{prefix} not in {errs:#?}"
        );
    }
}

#[test]
fn a_route_has_exactly_one_action_named_in_the_error() {
    assert_route_errors(
        "  - backend: v1\n    redirect: {scheme: https}\n  - match: {path: /x}\n",
        &[
            "routes[0]: a route needs exactly one of `backend` (forward), `backends` (weighted split), `respond` (answer directly) or `redirect`; got `backend` and `redirect`",
            "routes[1]: a route needs exactly one of `backend` (forward), `backends` (weighted split), `respond` (answer directly) or `redirect`; got none",
        ],
    );
    assert_route_errors(
        "  - backends: [{name: v1}]\n    respond: {status: 200}\n",
        &["routes[0]: a route needs exactly one of `backend` (forward), `backends` (weighted split), `respond` (answer directly) or `redirect`; got `backends` and `respond`"],
    );
}

#[test]
fn splits_need_known_distinct_backends_and_a_positive_sum() {
    assert_route_errors(
        "  - backends: []\n  - backends: [{name: v1, weight: 0}, {name: v2, weight: 0}]\n  - backends: [{name: v1}, {name: v1}, {name: v3}]\n  - backends: [{name: v1, weight: 1000001}]\n",
        &[
            "routes[0].backends: needs at least one backend",
            "routes[1].backends: the weights add up to 0",
            "routes[2].backends[1].name: backend \"v1\" is listed twice",
            "routes[2].backends[2].name: unknown backend \"v3\" (defined: v1, v2)",
            "routes[3].backends[0].weight: must be at most 1000000",
        ],
    );
    let many: String = (0..17)
        .map(|i| format!("{{name: v1, weight: {i}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_route_errors(
        &format!("  - backends: [{many}]\n"),
        &["routes[0].backends: at most 16 entries, got 17"],
    );

    let c = Config::from_yaml(&format!(
        "{TWO}routes:\n  - backends: [{{name: v1, weight: 90}}, {{name: v2, weight: 10}}, {{name: v1x, weight: 0}}]\n"
    ));
    assert!(c.is_err(), "an unknown name is an error even at weight 0");
    let c = Config::from_yaml(&format!(
        "{TWO}routes:\n  - backends: [{{name: v1, weight: 0}}, {{name: v2}}]\n"
    ))
    .unwrap();
    let r = &c.routes[0];
    let Action::Split(split) = &r.action else {
        panic!("not a split: {:?}", r.action)
    };
    assert_eq!(
        *split,
        vec![
            WeightedBackend {
                backend: 0,
                weight: 0
            },
            WeightedBackend {
                backend: 1,
                weight: 1
            }
        ]
    );
    assert_eq!(r.forward_backends().collect::<Vec<_>>(), vec![1]);
}

#[test]
fn header_filters_refuse_bad_names_and_framing() {
    assert_route_errors(
        r#"  - backend: v1
    request_headers:
      set: {"bad header": x, content-length: "5", host: internal}
      add: {transfer-encoding: chunked, x-ok: "a\u0001b", host: two}
      remove: [connection, x-request-id, host, "x y", x-hitless-mirror]
    response_headers:
      set: {host: fine, te: trailers}
      add: {x-a: "1"}
      remove: [X-A]
"#,
        &[
            "routes[0].request_headers.set.bad header: \"bad header\" is not a valid header name",
            "routes[0].request_headers.set.content-length: \"content-length\" cannot be changed: frames the body",
            "routes[0].request_headers.add.transfer-encoding: \"transfer-encoding\" cannot be changed: frames the body",
            "routes[0].request_headers.add.x-ok: not a valid header value",
            "routes[0].request_headers.add.host: \"host\" cannot be changed: may only be `set`",
            "routes[0].request_headers.remove[0]: \"connection\" cannot be changed: hop-by-hop",
            "routes[0].request_headers.remove[1]: \"x-request-id\" cannot be changed",
            "routes[0].request_headers.remove[2]: \"host\" cannot be changed: may only be `set`",
            "routes[0].request_headers.remove[3]: \"x y\" is not a valid header name",
            "routes[0].request_headers.remove[4]: \"x-hitless-mirror\" cannot be changed: marks hitless's mirrored copies",
            "routes[0].response_headers.set.te: \"te\" cannot be changed: hop-by-hop",
            "routes[0].response_headers.remove[0]: \"x-a\" is named twice",
        ],
    );
    let errs = errors(&format!(
        "{TWO}routes:\n  - backend: v1\n    request_headers: {{set: {{host: internal}}}}\n    response_headers: {{set: {{host: fine}}}}\n  - respond: {{status: 200}}\n    response_headers: {{add: {{x-a: b}}}}\n"
    ));
    assert_eq!(
        errs,
        vec!["routes[1].response_headers: applies to requests forwarded to a backend; this route answers by itself"],
        "Host may be set upstream; nothing else is wrong"
    );
}

#[test]
fn redirects_are_validated_against_the_match() {
    assert_route_errors(
        r#"  - match: {path: /old}
    redirect: {path_prefix: /new}
  - redirect: {status: 200, scheme: ftp, port: 70000}
  - redirect: {}
  - redirect: {path: /a, path_prefix: /b, host: "*.example.com"}
  - redirect: {path: "new"}
"#,
        &[
            "routes[0].redirect.path_prefix: replaces what `match.path_prefix` matched, but this route matches the exact path \"/old\": use `path`",
            "routes[1].redirect.status: expected 301, 302, 303, 307 or 308, got 200",
            "routes[1].redirect.scheme: expected \"http\" or \"https\", got \"ftp\"",
            "routes[1].redirect.port: expected a port between 1 and 65535, got 70000",
            "routes[2].redirect: needs at least one of scheme, host, port, path or path_prefix",
            "routes[3].redirect: set either path or path_prefix, not both",
            "routes[3].redirect.host: a wildcard names no host",
            "routes[4].redirect.path: expected a path like \"/new\"",
        ],
    );
    let c = Config::from_yaml(&format!(
        "{TWO}routes:\n  - match: {{path_prefix: /old}}\n    redirect: {{scheme: https, path_prefix: /new}}\n"
    ))
    .unwrap();
    let r = &c.routes[0];
    let Action::Redirect(redirect) = &r.action else {
        panic!("not a redirect: {:?}", r.action)
    };
    assert_eq!(
        Some(redirect.clone()),
        Some(Redirect {
            scheme: Some("https"),
            host: None,
            port: None,
            path: Some(PathReplace::Prefix("/new".into())),
            status: http::StatusCode::FOUND,
        })
    );
}

#[test]
fn match_conditions_and_rewrites_are_validated() {
    assert_route_errors(
        r#"  - match: {scheme: ftp, method: get, headers: [{name: "x y", value: a}, {name: Host, value: h}], query: [{name: "", value: "1"}]}
    backend: v1
  - match: {path: /x}
    backend: v1
    rewrite: {path_prefix: /y, host: "a b"}
  - backend: v1
    rewrite: {}
  - backend: v1
    rewrite: {host: internal}
    request_headers: {set: {host: other}}
"#,
        &[
            "routes[0].match.scheme: expected \"http\" or \"https\", got \"ftp\"",
            "routes[0].match.method: expected a method in capitals like \"GET\", got \"get\"",
            "routes[0].match.headers[0]: \"x y\" is not a valid header name",
            "routes[0].match.headers[1].name: match the host with `match.host`",
            "routes[0].match.query[0].name: must not be empty",
            "routes[1].rewrite.path_prefix: replaces what `match.path_prefix` matched",
            "routes[1].rewrite.host: expected a host name",
            "routes[2].rewrite: needs host, path or path_prefix",
            "routes[3].request_headers.set.host: the Host is set by `rewrite.host` already",
        ],
    );
    let c = Config::from_yaml(&format!(
        "{TWO}routes:\n  - match: {{method: GET, headers: [{{name: X-Env, value: canary}}], query: [{{name: debug, value: \"1\"}}]}}\n    backend: v1\n"
    ))
    .unwrap();
    let cond = &c.routes[0].conditions;
    assert_eq!(cond.method, Some(http::Method::GET));
    assert_eq!(cond.headers[0].0, "x-env", "names are case-insensitive");
    assert_eq!(
        cond.query,
        vec![("debug".to_string(), ValueMatch::Exact("1".to_string()))]
    );
}

#[test]
fn routes_with_conditions_shadow_only_what_implies_them() {
    let c = Config::from_yaml(&format!(
        r#"{TWO}routes:
  - name: canary
    match: {{headers: [{{name: x-env, value: canary}}]}}
    backend: v2
  - name: gets
    match: {{method: GET, path_prefix: /api}}
    backend: v1
  - name: gets-debug
    match: {{method: GET, path_prefix: /api/x, query: [{{name: debug, value: "1"}}]}}
    backend: v1
  - name: all
    backend: v1
"#
    ))
    .unwrap();
    let w: Vec<String> = c.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        vec!["warning: routes[2].match: never matches: routes[1] (\"gets\") comes first and matches everything it would (first match wins); move it above"],
        "conditions let other requests through: only a route whose conditions imply an earlier one's is shadowed"
    );
}

#[test]
fn new_route_keys_survive_the_effective_config_round_trip() {
    let yaml = format!(
        r#"{TWO}routes:
  - name: split
    match: {{path_prefix: /shop, scheme: https, method: POST, headers: [{{name: x-env, value: canary}}], query: [{{name: debug, value: "a b"}}]}}
    backends: [{{name: v1, weight: 90}}, {{name: v2, weight: 10}}]
    request_headers: {{set: {{host: internal}}, add: {{x-a: "1"}}, remove: [x-b]}}
    response_headers: {{set: {{cache-control: no-store}}}}
    rewrite: {{path_prefix: /}}
  - name: moved
    redirect: {{scheme: https, host: example.com, port: 8443, path: /new, status: 308}}
"#
    );
    let c = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let again = Config::from_yaml(&effective_yaml(&c)).unwrap_or_else(|e| panic!("{e}"));
    for (x, y) in c.routes.iter().zip(&again.routes) {
        assert_eq!(x.conditions, y.conditions, "{}", x.name);
        assert_eq!(
            format!("{:?}", x.action),
            format!("{:?}", y.action),
            "{}",
            x.name
        );
        assert_eq!(x.request_headers, y.request_headers, "{}", x.name);
        assert_eq!(x.response_headers, y.response_headers, "{}", x.name);
        assert_eq!(x.rewrite, y.rewrite, "{}", x.name);
    }
    assert!(matches!(&c.routes[0].action, Action::Split(s) if s.len() == 2));
    assert!(matches!(&c.routes[1].action, Action::Redirect(r) if r.status.as_u16() == 308));
}

#[test]
fn path_regex_is_compiled_bounded_and_exclusive() {
    let ok =
        format!("{BASE}routes:\n  - match: {{path_regex: \"^/a/[0-9]+$\"}}\n    backend: api\n");
    let config = Config::from_yaml(&ok).unwrap();
    assert!(matches!(&config.routes[0].path, PathMatch::Regex(r) if r.0.is_match("/a/12")));
    let e = errors(&format!(
        "{BASE}routes:\n  - match: {{path_regex: \"^/a/(\"}}\n    backend: api\n"
    ));
    assert!(
        e.iter()
            .any(|e| e.contains("routes[0].match.path_regex: not a valid regular expression")),
        "{e:?}"
    );
    let e = errors(&format!(
        "{BASE}routes:\n  - match: {{path_regex: \"^/a\", path_prefix: /a}}\n    backend: api\n"
    ));
    assert!(
        e.iter().any(|e| e.contains("routes[0].match: set one of")),
        "{e:?}"
    );
    let long = "a".repeat(2000);
    let e = errors(&format!(
        "{BASE}routes:\n  - match: {{path_regex: \"{long}\"}}\n    backend: api\n"
    ));
    assert!(e.iter().any(|e| e.contains("longer than 1024")), "{e:?}");
    // A pattern whose compiled form is too large is refused, not built.
    let e = errors(&format!(
        "{BASE}routes:\n  - match: {{path_regex: \"(\\\\w{{50}}){{50}}\"}}\n    backend: api\n"
    ));
    assert!(
        e.iter()
            .any(|e| e.contains("path_regex: not a valid regular expression")),
        "{e:?}"
    );
    let e = errors(&format!(
        "{BASE}routes:\n  - match: {{path_regex: \"^/a\"}}\n    rewrite: {{path_prefix: /b}}\n    backend: api\n"
    ));
    assert!(e.iter().any(|e| e.contains("regular expression")), "{e:?}");
}

#[test]
fn listener_ports_name_listeners_by_their_public_port() {
    let listeners = "listeners:\n  - {bind: \"0.0.0.0:8080\", public_port: 80}\n  - {bind: \"0.0.0.0:8443\", public_port: 443, tls: {self_signed: true}}\n  - {bind: \"0.0.0.0:9000\"}\n";
    let c = Config::from_yaml(&format!(
        "{listeners}{BASE}routes:\n  - name: secure\n    match: {{path_prefix: /a, listener_ports: [443, 80, 443]}}\n    backend: api\n  - name: a\n    match: {{path_prefix: /a/b, listener_ports: [80]}}\n    backend: api\n  - name: internal\n    match: {{listener_ports: [9000]}}\n    backend: api\n  - name: all\n    backend: api\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listener_ports, [80, 443, 9000], "default: the bound port");
    assert_eq!(c.routes[0].listener_ports, [80, 443], "sorted, once each");
    // A route shadows a later one only on the later one's ports (`internal` on 9000 shadows
    // nothing after it; `secure` shadows `a`).
    let w: Vec<String> = c.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("warning: routes[1].match: never matches: routes[0]"),
        "{w:?}"
    );
    // The effective config keeps both (and reads back the same).
    let again = Config::from_yaml(&effective_yaml(&c)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.listener_ports, c.listener_ports);
    assert_eq!(again.routes[0].listener_ports, [80, 443]);

    // A port no listener has; 0; one public port for a TLS and a plain listener.
    let e = errors(&format!(
        "{listeners}{BASE}routes:\n  - match: {{listener_ports: [81]}}\n    backend: api\n"
    ));
    assert_eq!(
        e,
        ["routes[0].match.listener_ports: no listener has port 81 (theirs: 80, 443, 9000; set listeners[].public_port)"]
    );
    let e = errors(&format!(
        "listeners:\n  - {{bind: \"0.0.0.0:8080\", public_port: 0}}\n{BASE}routes:\n  - backend: api\n"
    ));
    assert_eq!(e, ["listeners[0].public_port: must be 1 to 65535"]);
    let e = errors(&format!(
        "listeners:\n  - {{bind: \"0.0.0.0:8080\", public_port: 443}}\n  - {{bind: \"0.0.0.0:8443\", public_port: 443, tls: {{self_signed: true}}}}\n{BASE}routes:\n  - backend: api\n"
    ));
    assert_eq!(
        e,
        ["listeners[1].public_port: port 443 is listeners[0]'s too, and only one of them has TLS"]
    );
}

#[test]
fn mirror_names_a_backend_and_a_share_on_forwarding_routes() {
    let c = Config::from_yaml(&format!(
        "{TWO}routes:\n  - backend: v1\n    mirror: {{backend: v2, percent: 12.5}}\n  - backend: v1\n    mirror: {{backend: v2}}\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let m = c.routes[0].mirror.unwrap();
    assert_eq!(
        (c.backends[m.backend].name.as_str(), m.share.0),
        ("v2", 125_000)
    );
    assert_eq!(
        c.routes[1].mirror.unwrap().share.0,
        1_000_000,
        "default: every request"
    );
    let again = Config::from_yaml(&effective_yaml(&c)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.routes[0].mirror, c.routes[0].mirror);
    let e = errors(&format!(
        "{TWO}routes:\n  - backend: v1\n    mirror: {{backend: v3, percent: 150}}\n  - respond: {{status: 200}}\n    mirror: {{backend: v2}}\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("routes[0].mirror.backend: "), "{e:?}");
    assert!(
        e[1].starts_with("routes[1].mirror: requests are mirrored on routes with a `backend`"),
        "{e:?}"
    );
}

#[test]
fn header_and_query_conditions_take_a_value_or_a_pattern() {
    let c = Config::from_yaml(&format!(
        "{BASE}routes:\n  - match: {{headers: [{{name: x-version, pattern: \"^v[0-9]+$\"}}], query: [{{name: tag, pattern: \"^a\"}}]}}\n    backend: api\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let cond = &c.routes[0].conditions;
    assert!(matches!(&cond.headers[0].1, ValueMatch::Pattern(p) if p.0.is_match("v12")));
    assert!(matches!(&cond.query[0].1, ValueMatch::Pattern(p) if p.0.as_str() == "^a"));
    let again = Config::from_yaml(&effective_yaml(&c)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.routes[0].conditions, *cond);
    let e = errors(&format!(
        "{BASE}routes:\n  - match: {{headers: [{{name: x-a, value: a, pattern: a}}, {{name: x-b}}], query: [{{name: q, pattern: \"(\"}}]}}\n    backend: api\n"
    ));
    assert_eq!(
        e,
        [
            "routes[0].match.headers[0]: set one of value (exact) or pattern (a regular expression)",
            "routes[0].match.headers[1]: set one of value (exact) or pattern (a regular expression)",
            "routes[0].match.query[0].pattern: not a valid regular expression: error: unclosed group",
        ]
    );
}
