//! `hitless import`: Ingress objects with ingress-nginx annotations and HTTPRoutes become a
//! hitless config that `hitless check` accepts, with routes in the order the Ingress spec
//! implies, and a report line for every annotation and every field that does not map exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::path::Path;

use hitless::config::Config;
use hitless::ingress::{import_str, Outcome};
use support::hitless_bin;

const SHOP: &str = include_str!("fixtures/import/shop.yaml");

fn outcome_of(import: &hitless::ingress::Import, source: &str) -> Vec<Outcome> {
    import
        .notes
        .iter()
        .filter(|n| n.source == source)
        .map(|n| n.outcome)
        .collect()
}

#[test]
fn an_ingress_nginx_shop_becomes_a_valid_config_with_its_routes_in_spec_order() {
    let import = import_str("shop.yaml", SHOP).unwrap();
    let config =
        Config::from_yaml(&import.config).unwrap_or_else(|e| panic!("{e}\n{}", import.config));
    let routes: Vec<(String, Option<String>, String, String)> = config
        .routes
        .iter()
        .map(|r| {
            let host = match &r.host {
                Some(hitless::config::HostMatch::Exact(h)) => Some(h.clone()),
                Some(hitless::config::HostMatch::Suffix(s)) => Some(format!("*{s}")),
                None => None,
            };
            let path = match &r.path {
                hitless::config::PathMatch::Exact(p) => format!("= {p}"),
                hitless::config::PathMatch::Prefix(p) => format!("^ {p}"),
                hitless::config::PathMatch::Regex(r) => format!("~ {}", r.0.as_str()),
            };
            let backend = match &r.action {
                hitless::config::Action::Forward { backend } => {
                    config.backends[*backend].name.clone()
                }
                hitless::config::Action::Split(split) => split
                    .iter()
                    .map(|w| format!("{}*{}", config.backends[w.backend].name, w.weight))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => "-".into(),
            };
            (r.name.clone(), host, path, backend)
        })
        .collect();
    #[rustfmt::skip]
    let expected: Vec<(&str, Option<&str>, &str, &str)> = vec![
        // Exact hosts first. ssl-redirect (on by default for hosts in spec.tls): plain-HTTP
        // requests get 308 to https, before any other route of the host.
        ("shop/web-https-h0", Some("shop.example.com"), "^ /", "-"),
        // Then exact paths, then prefixes longest first (routes of different exact hosts never
        // overlap: their relative order is free).
        ("shop/web-r0-p2", Some("shop.example.com"), "= /healthz", "shop-web-http"),
        // app-root: `/` redirects.
        ("shop/docs-app-root-h0", Some("docs.example.com"), "= /", "-"),
        // The HTTPRoute's RegularExpression match: the whole path must match, ranked as a
        // prefix as long as the expression.
        ("shop/search-r0-m1-h0", Some("search.example.com"), "~ ^(?:/v[0-9]+/beta)$", "shop-web-http-2*90 shop-legacy-9000-2*10"),
        ("shop/web-r0-p1", Some("shop.example.com"), "^ /api", "shop-api-https"),
        // rewrite-target's /docs(/|$)(.*) -> /$2 idiom: the /docs prefix, replaced by /.
        ("shop/docs-r0-p0", Some("docs.example.com"), "^ /docs", "shop-web-http-2"),
        // The HTTPRoute's weighted backendRefs: a split (on backends of its own: no annotations).
        ("shop/search-r0-m0-h0", Some("search.example.com"), "^ /v1", "shop-web-http-2*90 shop-legacy-9000-2*10"),
        // The canary Ingress's canary-weight 5: a split of the main route.
        ("shop/web-r0-p0", Some("shop.example.com"), "^ /", "shop-web-http*95 shop-legacy-9000-2*5"),
        // A header match: a route with that condition.
        ("shop/search-r1-m0-h0", Some("search.example.com"), "^ /", "shop-legacy-9000-2"),
        // Then wildcards, then the default backend (an unnamed port: the pod's, 9000).
        ("shop/web-r1-p0", Some("*.example.com"), "^ /", "shop-web-http"),
        ("shop/web-default", None, "^ /", "shop-legacy-9000"),
    ];
    let expected: Vec<(String, Option<String>, String, String)> = expected
        .into_iter()
        .map(|(a, b, c, d)| (a.into(), b.map(Into::into), c.into(), d.into()))
        .collect();
    assert_eq!(routes, expected, "{}", import.config);

    // Annotations became settings on the Ingress's routes and backends.
    let web = config
        .backends
        .iter()
        .find(|b| b.name == "shop-web-http")
        .unwrap();
    assert_eq!(web.connect_timeout, std::time::Duration::from_secs(3));
    assert_eq!(web.pool_idle_timeout, std::time::Duration::from_secs(4));
    let api = config
        .backends
        .iter()
        .find(|b| b.name == "shop-api-https")
        .unwrap();
    assert_eq!(
        api.protocol,
        hitless::config::Protocol::Https,
        "from the port's name"
    );
    let named = |name: &str| config.routes.iter().find(|r| r.name == name).unwrap();
    let route = named("shop/web-r0-p0");
    assert_eq!(route.retry.attempts, 4);
    let canary = named("shop/search-r1-m0-h0");
    assert_eq!(canary.conditions.headers.len(), 1);
    assert_eq!(canary.conditions.headers[0].0, "x-canary");
    assert_eq!(config.routes[0].conditions.scheme, Some("http"));
    let docs = named("shop/docs-r0-p0");
    assert_eq!(
        docs.rewrite.as_ref().and_then(|r| r.path.clone()),
        Some(hitless::config::PathReplace::Prefix("/".into()))
    );
    assert_eq!(
        route.backend_request_timeout,
        std::time::Duration::from_secs(20)
    );
    assert_eq!(
        route.retry.on.names(),
        vec![
            "connect-failure",
            "refused-stream",
            "reset",
            "502",
            "backend-timeout"
        ]
    );
    // The HTTPRoute's own timeouts and header filter.
    let search = named("shop/search-r0-m0-h0");
    assert_eq!(search.request_headers.add.len(), 1);
    assert_eq!(search.request_timeout, std::time::Duration::from_secs(10));
    assert_eq!(
        search.backend_request_timeout,
        std::time::Duration::from_secs(2)
    );
    // EndpointSlice ports: the Service port's name, or the pod port of an unnamed one.
    assert!(import.config.contains("port: http\n"), "{}", import.config);
    assert!(import.config.contains("port: 9000\n"), "{}", import.config);
}

#[test]
fn every_annotation_and_lossy_field_is_reported() {
    let import = import_str("shop.yaml", SHOP).unwrap();
    let a = |name: &str| outcome_of(&import, &format!("nginx.ingress.kubernetes.io/{name}"));
    assert_eq!(a("proxy-connect-timeout"), [Outcome::Maps]);
    assert_eq!(a("proxy-read-timeout"), [Outcome::Differs]);
    // http_404 is not retried by hitless: said so.
    assert_eq!(a("proxy-next-upstream"), [Outcome::Differs]);
    assert_eq!(a("proxy-next-upstream-tries"), [Outcome::Maps]);
    assert_eq!(a("upstream-keepalive-timeout"), [Outcome::Maps]);
    assert_eq!(a("proxy-body-size"), [Outcome::Unsupported]);
    assert_eq!(a("affinity"), [Outcome::Unsupported]);
    assert_eq!(a("configuration-snippet"), [Outcome::Refused]);
    assert_eq!(outcome_of(&import, "spec.tls"), [Outcome::Differs]);
    assert_eq!(
        outcome_of(&import, "spec.rules[1].http.paths[0].pathType"),
        [Outcome::Differs]
    );
    // A RegularExpression path is imported (as `path_regex`): nothing to report.
    assert_eq!(outcome_of(&import, "spec.rules[0].matches[1].path"), []);
    assert_eq!(outcome_of(&import, "Service/api"), [Outcome::Differs]);
    // A weighted copy is merged into its main route, never imported as a plain route.
    assert_eq!(a("canary"), [Outcome::Maps]);
    assert_eq!(a("canary-weight"), [Outcome::Maps]);
    assert_eq!(a("rewrite-target"), [Outcome::Maps]);
    assert_eq!(a("app-root"), [Outcome::Maps]);
    assert_eq!(a("use-regex"), [Outcome::Differs]);
    // A regular expression that is not the rewrite idiom: reported, left out.
    assert_eq!(
        outcome_of(&import, "spec.rules[0].http.paths[1].path"),
        [Outcome::Unsupported]
    );
    assert_eq!(import.exit_code(), 1, "a snippet was refused");
    let report = import.render_report();
    assert!(
        report.contains(
            "refused     Ingress/shop/web: nginx.ingress.kubernetes.io/configuration-snippet"
        ),
        "{report}"
    );
    assert!(
        report.ends_with("7 maps, 6 differs, 3 unsupported, 1 refused\n"),
        "{report}"
    );
}

#[test]
fn the_binary_writes_the_config_and_the_report_and_exits_by_what_was_refused() {
    let dir = std::env::temp_dir().join(format!("hitless-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clean = dir.join("clean.yaml");
    // The shop without its snippet: imported, exit 0.
    let text: String = SHOP
        .lines()
        .filter(|l| !l.contains("configuration-snippet") && !l.contains("more_set_headers"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&clean, text).unwrap();
    let out = dir.join("hitless.yaml");
    let run = hitless_bin()
        .args([
            "import",
            clean.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = String::from_utf8_lossy(&run.stderr);
    assert!(
        report.contains("unsupported Ingress/shop/web: nginx.ingress.kubernetes.io/affinity"),
        "{report}"
    );
    let check = hitless_bin()
        .args(["check", "--config", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let refused = hitless_bin()
        .args(["import", "tests/fixtures/import/shop.yaml"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("routes:"));
    let unreadable = hitless_bin()
        .args(["import", dir.join("missing.yaml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(unreadable.status.code(), Some(64));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_folder_imports_to_exactly_the_expected_config_and_report() {
    // `hitless import tests/fixtures/import/` as a user runs it; the expected output was
    // reviewed by hand (tests/fixtures/import-expected/). Any change to the translation shows
    // here as a diff to read.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let out = hitless_bin()
        .args(["import", dir.join("import").to_str().unwrap()])
        .output()
        .unwrap();
    let expected =
        |name: &str| std::fs::read_to_string(dir.join("import-expected").join(name)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected("hitless.yaml")
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected("report.txt"));
    assert_eq!(out.status.code(), Some(1), "the snippet was refused");
}

#[test]
fn use_regex_paths_match_as_nginx_matches_them_or_are_reported() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
spec:
  ingressClassName: nginx
  rules:
    - host: api.example.com
      http:
        paths:
          - {path: "/v[0-9]+/users/.*", pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
          - {path: "/(?=admin)", pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
          - {path: /plain, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let import = import_str("api.yaml", yaml).unwrap();
    let config = hitless::config::Config::from_yaml(&import.config).unwrap();
    let regexes: Vec<&str> = config
        .routes
        .iter()
        .filter_map(|r| match &r.path {
            hitless::config::PathMatch::Regex(re) => Some(re.0.as_str()),
            _ => None,
        })
        .collect();
    // nginx's `location ~* "^/v[0-9]+/users/.*"`: case-insensitive, from the start.
    assert_eq!(regexes, ["(?i)^/v[0-9]+/users/.*"], "{}", import.config);
    let re = match &config
        .routes
        .iter()
        .find(|r| r.name.ends_with("-p0"))
        .unwrap()
        .path
    {
        hitless::config::PathMatch::Regex(re) => re.0.clone(),
        other => panic!("{other:?}"),
    };
    assert!(re.is_match("/V2/Users/7"));
    assert!(!re.is_match("/x/v2/users/7"));
    // Look-around is not something hitless can match: reported, left out.
    assert_eq!(
        outcome_of(&import, "spec.rules[0].http.paths[1].path"),
        [Outcome::Unsupported]
    );
    assert!(config.routes.iter().any(|r| r.name.ends_with("-p2")));
}

#[test]
fn an_httproute_regex_cannot_escape_its_anchors() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sneaky, namespace: shop}
spec:
  hostnames: [a.example.com]
  rules:
    - matches:
        - path: {type: RegularExpression, value: "/x)|(.*"}
        - path: {type: RegularExpression, value: "/ok/[0-9]+"}
      backendRefs: [{name: web, port: 80}]
"#;
    let import = import_str("route.yaml", yaml).unwrap();
    // Wrapped as ^(?:...)$ it would compile and match every path: refused as written.
    assert_eq!(
        outcome_of(&import, "spec.rules[0].matches[0].path"),
        [Outcome::Unsupported]
    );
    assert!(!import.config.contains("/x)|(.*"), "{}", import.config);
    assert!(
        import.config.contains("path_regex: ^(?:/ok/[0-9]+)$"),
        "{}",
        import.config
    );
}

#[test]
fn a_request_mirror_becomes_the_routes_mirror() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop}
spec:
  hostnames: [shop.example.com]
  rules:
    - backendRefs: [{name: web, port: 80}]
      filters:
        - type: RequestMirror
          requestMirror:
            backendRef: {name: web-next, port: 80}
            fraction: {numerator: 1, denominator: 4}
        - type: RequestMirror
          requestMirror:
            backendRef: {name: web-other, port: 80}
"#;
    let import = import_str("mirror.yaml", yaml).unwrap();
    let config =
        Config::from_yaml(&import.config).unwrap_or_else(|e| panic!("{e}\n{}", import.config));
    let mirror = config.routes[0].mirror.unwrap();
    assert_eq!(config.backends[mirror.backend].name, "shop-web-next-80");
    assert_eq!(mirror.share.0, 250_000, "1/4 of the requests");
    // hitless copies to one backend: the second mirror is reported.
    assert_eq!(
        outcome_of(&import, "spec.rules[0].filters[1]"),
        [Outcome::Unsupported]
    );
}

/// A mirror hitless would not apply is reported, and the rest of the object still loads: on
/// a rule that answers 500 itself (a route with both would be refused, and the controller
/// would drop the whole HTTPRoute), on a GRPCRoute (gRPC bodies are never held, so never
/// copied), without a backendRef.
#[test]
fn request_mirrors_hitless_cannot_apply_are_reported_and_the_route_loads() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop}
spec:
  hostnames: [shop.example.com]
  rules:
    - matches: [{path: {type: PathPrefix, value: /gone}}]
      backendRefs: [{name: web, port: 80, weight: 0}]
      filters:
        - {type: RequestMirror, requestMirror: {backendRef: {name: web-next, port: 80}}}
    - matches: [{path: {type: PathPrefix, value: /nowhere}}]
      backendRefs: [{name: web, port: 80}]
      filters:
        - {type: RequestMirror, requestMirror: {}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: shop}
spec:
  hostnames: [rpc.example.com]
  rules:
    - backendRefs: [{name: grpc, port: 50051}]
      filters:
        - {type: RequestMirror, requestMirror: {backendRef: {name: grpc-next, port: 50051}}}
"#;
    let import = import_str("mirrors.yaml", yaml).unwrap();
    let config =
        Config::from_yaml(&import.config).unwrap_or_else(|e| panic!("{e}\n{}", import.config));
    assert_eq!(config.routes.len(), 3, "{}", import.config);
    assert!(config.routes.iter().all(|r| r.mirror.is_none()));
    for (object, field) in [
        ("shop", "spec.rules[0].filters[0]"),
        ("shop", "spec.rules[1].filters[0]"),
        ("rpc", "spec.rules[0].filters[0]"),
    ] {
        let notes: Vec<_> = import
            .notes
            .iter()
            .filter(|n| n.object.ends_with(&format!("/{object}")) && n.source == field)
            .map(|n| n.outcome)
            .collect();
        assert_eq!(notes, [Outcome::Unsupported], "{object} {field}");
    }
}

#[test]
fn header_and_query_regular_expressions_become_anchored_patterns() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop}
spec:
  rules:
    - matches:
        - headers: [{type: RegularExpression, name: x-version, value: "v[0-9]+"}]
          queryParams: [{type: RegularExpression, name: tag, value: "sale|promo"}]
        - headers: [{type: RegularExpression, name: x-escape, value: "a)|(.*"}]
      backendRefs: [{name: web, port: 80}]
"#;
    let import = import_str("regex.yaml", yaml).unwrap();
    let config =
        Config::from_yaml(&import.config).unwrap_or_else(|e| panic!("{e}\n{}", import.config));
    assert_eq!(config.routes.len(), 1, "{}", import.config);
    let cond = &config.routes[0].conditions;
    use hitless::config::ValueMatch;
    assert!(
        matches!(&cond.headers[0].1, ValueMatch::Pattern(p) if p.0.as_str() == "^(?:v[0-9]+)$")
    );
    assert!(
        matches!(&cond.query[0].1, ValueMatch::Pattern(p) if p.0.as_str() == "^(?:sale|promo)$")
    );
    // A value that would escape the anchors is refused, with its match.
    assert_eq!(
        outcome_of(&import, "spec.rules[0].matches[1].headers[0]"),
        [Outcome::Unsupported]
    );
}
