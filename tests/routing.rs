//! Routing by host (exact, wildcard, any port, any case) and path (segment prefix, exact),
//! first match wins, and routes that answer directly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use support::*;

#[tokio::test]
async fn routes_by_host_and_path_first_match_wins() {
    let api = named_upstream("api").await;
    let v2 = named_upstream("api-v2").await;
    let tenants = named_upstream("tenants").await;
    let web = named_upstream("web").await;
    let config = render(
        r#"
backends:
  api: {endpoints: ["{api}"]}
  v2: {endpoints: ["{v2}"]}
  tenants: {endpoints: ["{tenants}"]}
  web: {endpoints: ["{web}"]}
routes:
  - name: v2
    match: {host: api.example.com, path_prefix: /v2}
    backend: v2
  - name: api
    match: {host: api.example.com}
    backend: api
  - name: tenants
    match: {host: "*.tenants.example.com"}
    backend: tenants
  - name: health
    match: {path: /status}
    respond: {status: 200, headers: {cache-control: no-store}, body: "up\n"}
  - name: web
    backend: web
"#,
        &[
            ("api", api.addr.to_string()),
            ("v2", v2.addr.to_string()),
            ("tenants", tenants.addr.to_string()),
            ("web", web.addr.to_string()),
        ],
    );
    let app = start_proxy(&config).await;
    let addr = app.traffic_addrs[0];
    let c = client();
    let cases = [
        ("api.example.com", "/v2/users", "api-v2"),
        ("api.example.com", "/v2", "api-v2"),
        ("api.example.com", "/v2x", "api"), // prefixes match whole segments
        ("API.Example.com:8443", "/v1", "api"), // case and port are ignored
        ("a.tenants.example.com", "/", "tenants"),
        ("a.b.tenants.example.com", "/x", "tenants"),
        ("tenants.example.com", "/", "web"), // the wildcard needs a label in front
        ("other.example.com", "/status", "up\n"),
        ("other.example.com", "/status/x", "web"), // exact path means exact
        ("other.example.com", "/", "web"),
    ];
    for (host, path, expected) in cases {
        let answer = get(&c, addr, host, path).await;
        assert_eq!(answer.status, 200, "{host}{path}");
        assert_eq!(answer.body, expected, "{host}{path}");
    }
    let status = get(&c, addr, "x", "/status").await;
    assert_eq!(status.header("cache-control"), "no-store");
    assert_eq!(status.header("x-request-id").len(), 32);
}

#[tokio::test]
async fn direct_answer_needs_no_upstream() {
    let config = "routes:\n  - respond: {status: 503, headers: {retry-after: \"120\"}, body: \"down for maintenance\\n\"}\n";
    let app = start_proxy(config).await;
    let answer = get(&client(), app.traffic_addrs[0], "x", "/anything").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("retry-after"), "120");
    assert_eq!(answer.body, "down for maintenance\n");
    // A fixed answer is the route's own, not a proxy error.
    assert_eq!(answer.header("proxy-status"), "");
}
