//! Routing by host (exact, wildcard, any port, any case) and path (segment prefix, exact),
//! then by method, headers and query; first match wins; routes that answer directly or
//! redirect; weighted splits; header filters and URL rewrites. The new route features are
//! checked on both engines: each HTTP/1.1 request on a new connection (the direct engine
//! looks at it first and hands it to hyper's when the route needs it) and HTTP/2 (hyper's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Which of hitless's engines a request reaches first.
#[derive(Clone, Copy, Debug)]
enum Engine {
    /// HTTP/1.1, each request on a new connection: the direct engine reads it first.
    Direct,
    /// HTTP/2 prior knowledge: hyper's engine; the authority is `:authority`.
    H2c,
}

const ENGINES: [Engine; 2] = [Engine::Direct, Engine::H2c];

/// A client of one engine of hitless at `addr`.
struct Asker {
    addr: SocketAddr,
    h2: Option<hyper::client::conn::http2::SendRequest<Body>>,
}

impl Asker {
    async fn new(addr: SocketAddr, engine: Engine) -> Asker {
        let h2 = match engine {
            Engine::Direct => None,
            Engine::H2c => {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (send, conn) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .unwrap();
                tokio::spawn(conn);
                Some(send)
            }
        };
        Asker { addr, h2 }
    }

    /// `method authority target` with `headers`; the answer.
    async fn ask(
        &mut self,
        method: &str,
        authority: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        match &mut self.h2 {
            None => raw_http1(self.addr, method, authority, target, headers).await,
            Some(send) => {
                let mut request = Request::builder()
                    .method(method)
                    .uri(format!("http://{authority}{target}"));
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                let response = send.send_request(request.body(full("")).unwrap()).await;
                let (head, body) = response.unwrap().into_parts();
                let body = http_body_util::BodyExt::collect(body).await.unwrap();
                Answer {
                    status: head.status.as_u16(),
                    headers: head.headers,
                    body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                }
            }
        }
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), read to the end.
async fn raw_http1(
    addr: SocketAddr,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .unwrap_or_else(|_| panic!("no answer within 10 s to {method} {host}{target}"))
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut map = http::HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        map.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    Answer {
        status,
        headers: map,
        body: body.to_string(),
    }
}

#[tokio::test]
async fn method_header_and_query_conditions_choose_the_route_or_fall_through() {
    let plain = named_upstream("plain").await;
    let canary = named_upstream("canary").await;
    let writer = named_upstream("writer").await;
    let debug = named_upstream("debug").await;
    let app = named_upstream("app").await;
    let config = render(
        r#"
backends:
  plain: {endpoints: ["{plain}"]}
  canary: {endpoints: ["{canary}"]}
  writer: {endpoints: ["{writer}"]}
  debug: {endpoints: ["{debug}"]}
  app: {endpoints: ["{app}"]}
routes:
  - name: plain
    match: {path: /plain}
    backend: plain
  - name: canary
    match: {path_prefix: /app, headers: [{name: X-Env, value: canary}, {name: x-tier, value: gold}]}
    backend: canary
  - name: writes
    match: {path_prefix: /app, method: POST}
    backend: writer
  - name: debug
    match: {path_prefix: /app, query: [{name: debug, value: "1"}]}
    backend: debug
  - name: app
    match: {path_prefix: /app}
    backend: app
"#,
        &[
            ("plain", plain.addr.to_string()),
            ("canary", canary.addr.to_string()),
            ("writer", writer.addr.to_string()),
            ("debug", debug.addr.to_string()),
            ("app", app.addr.to_string()),
        ],
    );
    let proxy = start_proxy(&config).await;
    // Method, target, headers, the upstream that answers.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("GET", "/plain", &[], "plain"),
        (
            "GET",
            "/app/x",
            &[("x-env", "canary"), ("x-tier", "gold")],
            "canary",
        ),
        (
            "GET",
            "/app/x",
            &[("X-ENV", "canary"), ("X-Tier", "gold")],
            "canary",
        ),
        // Every condition must hold; values are exact.
        ("GET", "/app/x", &[("x-env", "canary")], "app"),
        (
            "GET",
            "/app/x",
            &[("x-env", "Canary"), ("x-tier", "gold")],
            "app",
        ),
        (
            "POST",
            "/app/x",
            &[("x-env", "canary"), ("x-tier", "gold")],
            "canary",
        ),
        ("POST", "/app/x", &[], "writer"),
        ("PUT", "/app/x", &[], "app"),
        ("GET", "/app/x?debug=1", &[], "debug"),
        ("GET", "/app/x?a=b&debug=%31", &[], "debug"),
        ("GET", "/app/x?debug=10", &[], "app"),
        // The first occurrence decides.
        ("GET", "/app/x?debug=2&debug=1", &[], "app"),
        ("GET", "/app/x", &[], "app"),
    ];
    for engine in ENGINES {
        let mut asker = Asker::new(proxy.traffic_addrs[0], engine).await;
        for (method, target, headers, expected) in cases {
            let answer = asker.ask(method, "shop.example", target, headers).await;
            assert_eq!(
                answer.status, 200,
                "{engine:?} {method} {target} {headers:?}"
            );
            assert_eq!(
                answer.body, *expected,
                "{engine:?} {method} {target} {headers:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_weighted_split_sends_each_request_to_one_backend_by_weight() {
    let v1 = named_upstream("v1").await;
    let v2 = named_upstream("v2").await;
    let config = render(
        r#"
backends:
  web-v1: {endpoints: ["{v1}"]}
  web-v2: {endpoints: ["{v2}"]}
  never: {endpoints: ["{v2}"]}
routes:
  - name: web
    backends: [{name: web-v1, weight: 90}, {name: web-v2, weight: 10}, {name: never, weight: 0}]
"#,
        &[("v1", v1.addr.to_string()), ("v2", v2.addr.to_string())],
    );
    let proxy = start_proxy(&config).await;
    let (mut ones, mut twos) = (0.0, 0.0);
    let c = client();
    let mut h2 = Asker::new(proxy.traffic_addrs[0], Engine::H2c).await;
    for i in 0..2_000 {
        // Half over HTTP/1.1 keep-alive (the direct engine draws), half over HTTP/2 (hyper's).
        let answer = if i % 2 == 0 {
            get(&c, proxy.traffic_addrs[0], "web.example", "/").await
        } else {
            h2.ask("GET", "web.example", "/", &[]).await
        };
        match answer.body.as_str() {
            "v1" => ones += 1.0,
            "v2" => twos += 1.0,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // 10% of 2,000 is 200, with a standard deviation of 13.4: 120..280 is six of them.
    assert!((120.0..=280.0).contains(&twos), "web-v2 answered {twos}");
    // Each request is counted under the backend that answered it, none under weight 0.
    let series = |backend: &str| {
        format!("hitless_requests_total{{route=\"web\",backend=\"{backend}\",status=\"200\"}}")
    };
    wait_metric(proxy.admin_addr, &series("web-v1"), ones).await;
    wait_metric(proxy.admin_addr, &series("web-v2"), twos).await;
    assert_eq!(metric_at(proxy.admin_addr, &series("web-v1")).await, ones);
    assert_eq!(metric_at(proxy.admin_addr, &series("web-v2")).await, twos);
    assert_eq!(metric_at(proxy.admin_addr, &series("never")).await, 0.0);
}

#[tokio::test]
async fn header_filters_change_what_the_upstream_and_the_client_see() {
    let upstream = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        let mut text = format!("{} {}\n", req.method(), req.uri());
        for (k, v) in req.headers() {
            text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        let mut response = http::Response::new(full(text));
        let h = response.headers_mut();
        h.insert("x-internal", http::HeaderValue::from_static("secret"));
        h.insert(
            "cache-control",
            http::HeaderValue::from_static("max-age=60"),
        );
        response
    })
    .await;
    let config = render(
        r#"
backends:
  app: {endpoints: ["{app}"]}
  gone: {endpoints: [], hold_timeout: 0s}
routes:
  - name: gone
    match: {path_prefix: /gone}
    backend: gone
    response_headers: {set: {x-served-by: hitless}}
  - name: app
    backend: app
    request_headers:
      set: {x-tenant: acme, host: internal.example, x-forwarded-proto: https}
      add: {x-tag: added}
      remove: [x-drop, Cookie]
    response_headers:
      set: {cache-control: no-store}
      add: {x-served-by: hitless}
      remove: [x-internal]
"#,
        &[("app", upstream.addr.to_string())],
    );
    let proxy = start_proxy(&config).await;
    for engine in ENGINES {
        let mut asker = Asker::new(proxy.traffic_addrs[0], engine).await;
        let sent = [
            ("x-tenant", "evil"),
            ("x-tag", "mine"),
            ("x-drop", "1"),
            ("cookie", "session=1"),
            ("x-kept", "yes"),
        ];
        let answer = asker.ask("GET", "shop.example", "/p", &sent).await;
        assert_eq!(answer.status, 200, "{engine:?}");
        let seen: Vec<&str> = answer.body.lines().collect();
        for line in [
            "GET /p",
            "x-tenant: acme",
            "host: internal.example",
            "x-forwarded-host: shop.example",
            "x-forwarded-proto: https",
            "x-tag: mine",
            "x-tag: added",
            "x-kept: yes",
        ] {
            assert!(seen.contains(&line), "{engine:?}: {line} not in {seen:#?}");
        }
        for gone in [
            "x-tenant: evil",
            "x-drop:",
            "cookie:",
            "x-forwarded-proto: http\n",
        ] {
            assert!(
                !answer.body.contains(gone),
                "{engine:?}: {gone} reached the upstream: {seen:#?}"
            );
        }
        assert_eq!(seen.iter().filter(|l| l.starts_with("host:")).count(), 1);
        assert_eq!(answer.header("cache-control"), "no-store", "{engine:?}");
        assert_eq!(answer.header("x-served-by"), "hitless", "{engine:?}");
        assert_eq!(answer.header("x-internal"), "", "{engine:?}");
        assert_eq!(answer.header("x-request-id").len(), 32, "{engine:?}");

        // hitless's own answers are not the backend's: no response filter on them.
        let failed = asker.ask("GET", "shop.example", "/gone", &[]).await;
        assert!(failed.status >= 500, "{engine:?}: {}", failed.status);
        assert_eq!(failed.header("x-served-by"), "", "{engine:?}");
    }
}

#[tokio::test]
async fn redirects_build_the_location_from_the_request() {
    let config = r#"
routes:
  # Requests that arrived over TLS are not redirected (this listener is plain: never here).
  - match: {host: a.example, scheme: https}
    respond: {status: 200, body: "secure"}
  - match: {host: a.example, scheme: http}
    redirect: {scheme: https}
  - match: {host: b.example}
    redirect: {port: 8443, status: 301}
  - match: {host: c.example, path_prefix: /old}
    redirect: {path_prefix: /new, status: 308}
  - match: {host: d.example}
    redirect: {host: other.example, path: /landing, status: 303}
  - match: {host: e.example}
    redirect: {scheme: http, port: 80, status: 307}
  - match: {host: f.example, path_prefix: /old/}
    redirect: {scheme: https, port: 8443, path_prefix: /}
"#;
    let proxy = start_proxy(config).await;
    let cases = [
        (
            "a.example:8080",
            "/x/y?q=1&r=2",
            302,
            "https://a.example/x/y?q=1&r=2",
        ),
        ("a.example", "/", 302, "https://a.example/"),
        (
            "b.example:8080",
            "/p?q=1",
            301,
            "http://b.example:8443/p?q=1",
        ),
        ("c.example", "/old/x?q=1", 308, "http://c.example/new/x?q=1"),
        ("c.example:8080", "/old", 308, "http://c.example:8080/new"),
        (
            "d.example:8080",
            "/p?q=1",
            303,
            "http://other.example:8080/landing?q=1",
        ),
        ("e.example:8080", "/p", 307, "http://e.example/p"),
        (
            "f.example:80",
            "/old/a/b?z",
            302,
            "https://f.example:8443/a/b?z",
        ),
        ("f.example", "/old/", 302, "https://f.example:8443/"),
    ];
    for engine in ENGINES {
        let mut asker = Asker::new(proxy.traffic_addrs[0], engine).await;
        for (authority, target, status, location) in cases {
            let answer = asker.ask("GET", authority, target, &[]).await;
            assert_eq!(answer.status, status, "{engine:?} {authority}{target}");
            assert_eq!(
                answer.header("location"),
                location,
                "{engine:?} {authority}{target}"
            );
            assert_eq!(answer.body, "", "{engine:?}");
            assert_eq!(answer.header("x-request-id").len(), 32, "{engine:?}");
            assert_eq!(
                answer.header("proxy-status"),
                "",
                "a route's answer, not an error"
            );
        }
    }
}

#[tokio::test]
async fn a_redirect_without_a_host_to_send_to_is_a_bad_request() {
    let proxy = start_proxy("routes:\n  - redirect: {scheme: https}\n").await;
    // HTTP/1.0 may leave Host out: there is no `https://<host>/...` to answer with.
    let mut stream = TcpStream::connect(proxy.traffic_addrs[0]).await.unwrap();
    stream.write_all(b"GET /x HTTP/1.0\r\n\r\n").await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("HTTP/1.0 400") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    assert!(!text.to_ascii_lowercase().contains("location:"), "{text}");
}

#[tokio::test]
async fn rewrites_change_the_path_and_host_the_upstream_sees() {
    let echo = echo_upstream().await;
    let config = render(
        r#"
backends:
  app: {endpoints: ["{app}"]}
routes:
  - match: {path_prefix: /foo}
    backend: app
    rewrite: {path_prefix: /, host: internal.example}
  - match: {path_prefix: /api/}
    backend: app
    rewrite: {path_prefix: /v2}
  - match: {path: /exact}
    backend: app
    rewrite: {path: /x}
  - backend: app
"#,
        &[("app", echo.addr.to_string())],
    );
    let proxy = start_proxy(&config).await;
    let cases = [
        ("/foo/bar?q=1", "GET /bar?q=1 HTTP/1.1", "internal.example"),
        ("/foo", "GET / HTTP/1.1", "internal.example"),
        ("/foo/", "GET / HTTP/1.1", "internal.example"),
        (
            "/api/users/7?x=%20",
            "GET /v2/users/7?x=%20 HTTP/1.1",
            "shop.example",
        ),
        ("/exact?z=2", "GET /x?z=2 HTTP/1.1", "shop.example"),
        ("/other?z=2", "GET /other?z=2 HTTP/1.1", "shop.example"),
    ];
    for engine in ENGINES {
        let mut asker = Asker::new(proxy.traffic_addrs[0], engine).await;
        for (target, line, host) in cases {
            let answer = asker.ask("GET", "shop.example", target, &[]).await;
            assert_eq!(answer.status, 200, "{engine:?} {target}");
            let seen: Vec<&str> = answer.body.lines().collect();
            assert_eq!(seen.first(), Some(&line), "{engine:?} {target}");
            assert!(
                seen.contains(&format!("host: {host}").as_str()),
                "{engine:?} {target}: {seen:#?}"
            );
            assert!(
                seen.contains(&"x-forwarded-host: shop.example"),
                "{engine:?} {target}: the client's host stays in X-Forwarded-Host: {seen:#?}"
            );
        }
    }
}

#[tokio::test]
async fn regular_expression_paths_route_on_both_engines_and_over_http2() {
    let users = named_upstream("users").await;
    let web = named_upstream("web").await;
    let config = render(
        r#"
backends:
  users: {endpoints: ["{users}"]}
  web: {endpoints: ["{web}"]}
routes:
  - name: user-by-id
    match: {path_regex: "^/api/v[0-9]+/users/[0-9]+$"}
    backend: users
  - name: images
    match: {path_regex: "(?i)^/static/.+\\.(png|jpe?g)$"}
    respond: {status: 200, body: "image"}
  - name: web
    backend: web
"#,
        &[
            ("users", users.addr.to_string()),
            ("web", web.addr.to_string()),
        ],
    );
    let app = start_proxy(&config).await;
    let addr = app.traffic_addrs[0];
    let cases = [
        ("/api/v1/users/42", "users"),
        ("/api/v12/users/7", "users"),
        ("/api/v1/users/42/photos", "web"), // `$`: the whole path
        ("/api/vx/users/42", "web"),
        ("/api/v1/users/42?full=1", "users"), // the query is not the path
        ("/static/a/b.PNG", "image"),
        ("/static/b.jpeg", "image"),
        ("/static/b.gif", "web"),
    ];
    // HTTP/1.1 (the direct engine) and HTTP/2 (hyper's) choose the same routes.
    for c in [client(), h2c_client()] {
        for (path, expected) in cases {
            let answer = get(&c, addr, "any.example", path).await;
            assert_eq!(
                (answer.status, answer.body.as_str()),
                (200, expected),
                "{path}"
            );
        }
    }
}

/// `match.listener_ports`: a route serves the listeners of those public ports only, on both
/// engines (the direct HTTP/1.1 one and hyper's, over HTTP/2).
#[tokio::test]
async fn listener_ports_restrict_routes_to_their_listeners() {
    let admin = named_upstream("admin").await;
    let web = named_upstream("web").await;
    let config = render(
        r#"
listeners:
  - {bind: "127.0.0.1:8080", public_port: 80}
  - {bind: "127.0.0.1:8081", public_port: 9000}
backends:
  admin: {endpoints: ["{admin}"]}
  web: {endpoints: ["{web}"]}
routes:
  - name: internal
    match: {path_prefix: /admin, listener_ports: [9000]}
    backend: admin
  - name: web
    backend: web
"#,
        &[
            ("admin", admin.addr.to_string()),
            ("web", web.addr.to_string()),
        ],
    );
    let yaml = config;
    let mut config = hitless::config::Config::from_yaml(&yaml).unwrap();
    config.access_log = false;
    // The config's binds stand for these two, in order (public ports 80 and 9000).
    let listeners = hitless::app::Listeners {
        traffic: vec![
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ],
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let app = hitless::app::App::start(&config, listeners).unwrap();
    let (public, internal) = (app.traffic_addrs[0], app.traffic_addrs[1]);
    for c in [client(), h2c_client()] {
        assert_eq!(get(&c, internal, "h", "/admin/users").await.body, "admin");
        assert_eq!(get(&c, public, "h", "/admin/users").await.body, "web");
        assert_eq!(get(&c, internal, "h", "/shop").await.body, "web");
    }
    // A reload that moves the internal listener to public port 9100 cannot move the running
    // sockets: refused whole (its route would never match), the running routes stay.
    let moved = yaml
        .replace("public_port: 9000", "public_port: 9100")
        .replace("listener_ports: [9000]", "listener_ports: [9100]");
    let moved = hitless::config::Config::from_yaml(&moved).unwrap();
    let refused = app.reload(&moved).unwrap_err();
    assert!(refused.contains("listener port 9100"), "{refused}");
    assert_eq!(
        get(&client(), internal, "h", "/admin/users").await.body,
        "admin"
    );
}

/// Header and query `pattern`s (regular expressions) route on both engines; the query value is
/// matched decoded, as the application reads it.
#[tokio::test]
async fn header_and_query_patterns_route_on_both_engines() {
    let beta = named_upstream("beta").await;
    let web = named_upstream("web").await;
    let config = render(
        r#"
backends:
  beta: {endpoints: ["{beta}"]}
  web: {endpoints: ["{web}"]}
routes:
  - name: beta-clients
    match: {headers: [{name: user-agent, pattern: "^shop-app/2\\.[0-9]+"}]}
    backend: beta
  - name: beta-tags
    match: {query: [{name: tag, pattern: "^spring sale$"}]}
    backend: beta
  - name: web
    backend: web
"#,
        &[
            ("beta", beta.addr.to_string()),
            ("web", web.addr.to_string()),
        ],
    );
    let app = start_proxy(&config).await;
    let addr = app.traffic_addrs[0];
    for c in [client(), h2c_client()] {
        for (agent, path, expected) in [
            ("shop-app/2.14 (ios)", "/", "beta"),
            ("shop-app/3.0", "/", "web"),
            ("curl/8", "/?tag=spring+sale", "beta"),
            ("curl/8", "/?tag=spring%20sale", "beta"),
            ("curl/8", "/?tag=spring+sales", "web"),
            ("curl/8", "/?other=1&tag=spring", "web"),
            // A value sent as raw UTF-8 (not visible ASCII) is read as text too.
            ("shop-app/2.1 (Jos\u{e9})", "/", "beta"),
        ] {
            let request = Request::get(format!("http://{addr}{path}"))
                .header("host", "shop.example.com")
                .header(
                    "user-agent",
                    http::HeaderValue::from_bytes(agent.as_bytes()).unwrap(),
                )
                .body(full(""))
                .unwrap();
            let answer = send(&c, request).await;
            assert_eq!(answer.body, expected, "{agent} {path}");
        }
    }
}
