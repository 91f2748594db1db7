//! The Kubernetes manifests in k8s/ are read and their timing invariants asserted: the grace
//! period covers the drain, readiness probes notice a drain within its delay, the preStop hook
//! talks to the socket hitless listens on, the gateway's ConfigMap passes `hitless check`
//! without a warning, the sidecar's app outlives hitless's drain, RBAC is exactly what
//! discovery needs, alert expressions and the Grafana dashboard's queries name metrics hitless
//! exports, and the Dockerfile exposes the ports the manifests use. (Schema validation of the
//! same files runs in .ci/run.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use hitless::config::{Config, SidecarOptions};

fn manifest(path: &str) -> Value {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s").join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn grace(deployment: &Value) -> Duration {
    Duration::from_secs(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds is set"),
    )
}

/// How long until the readiness probe reports a failing /readyz at worst.
fn readiness_notice(container: &Value) -> Duration {
    let probe = &container["readinessProbe"];
    assert_eq!(probe["httpGet"]["path"], "/readyz");
    assert_eq!(probe["httpGet"]["port"], "admin");
    let period = probe["periodSeconds"].as_u64().unwrap_or(10);
    let failures = probe["failureThreshold"].as_u64().unwrap_or(3);
    Duration::from_secs(period * failures)
}

/// The socket the preStop hook's `hitless drain` talks to.
fn prestop_socket(container: &Value) -> String {
    let command: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("preStop exec")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&command[..2], ["/usr/local/bin/hitless", "drain"]);
    assert_eq!(command[2], "--socket");
    command[3].to_string()
}

fn port_named(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port named {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// The socket's directory is a writable volume (the root filesystem is read-only).
fn assert_writable(deployment: &Value, container: &Value, socket: &str) {
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let dir = Path::new(socket).parent().unwrap().to_str().unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{dir} is not mounted"));
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert!(volume.get("emptyDir").is_some(), "{volume}");
}

fn assert_hardened(container: &Value) {
    let sc = &container["securityContext"];
    assert_eq!(
        sc["allowPrivilegeEscalation"], false,
        "{}",
        container["name"]
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", container["name"]);
    assert_eq!(
        sc["capabilities"]["drop"][0], "ALL",
        "{}",
        container["name"]
    );
    assert!(
        container["resources"]["requests"].is_object()
            && container["resources"]["limits"].is_object(),
        "{}",
        container["name"]
    );
}

#[test]
fn ingress_controller_runs_controller_mode_with_a_base_config_that_passes_check() {
    let deployment = manifest("ingress/deployment.yaml");
    let configmap = manifest("ingress/configmap.yaml");
    let text = configmap["data"]["config.yaml"].as_str().unwrap();
    let config = Config::from_yaml(text).unwrap_or_else(|e| panic!("ConfigMap config: {e}"));
    let hitless = container(&deployment, "hitless");
    let args: Vec<&str> = hitless["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "ingress");
    let class_at = args.iter().position(|a| *a == "--class").unwrap();
    assert_eq!(args[class_at + 1], "hitless");
    let class = manifest("ingress/ingressclass.yaml");
    assert_eq!(class["metadata"]["name"], "hitless");
    assert_eq!(class["spec"]["controller"], "hitless.dev/ingress");
    let drain = &config.drain;
    assert_eq!(drain.grace_period, Some(grace(&deployment)));
    assert!(grace(&deployment) >= drain.delay + drain.timeout);
    assert_eq!(Path::new(&prestop_socket(hitless)), drain.control_socket);
    assert_hardened(hitless);
    // HTTPS out of the box: a TLS listener whose default certificate is made at start, the
    // Secrets' added at run time; the Service sends 80 and 443 to the plain and TLS ports.
    let tls: Vec<_> = config.listener_tls.iter().flatten().collect();
    assert_eq!(tls.len(), 1);
    assert!(tls[0].self_signed && tls[0].certificates.is_empty());
    let service = manifest("ingress/service.yaml");
    let ports: Vec<(u64, &str)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(80, "http"), (443, "https")]);
    for (name, listener) in [("http", 0), ("https", 1)] {
        assert_eq!(
            port_named(hitless, name),
            u64::from(config.listeners[listener].port())
        );
    }
    // TLS Secrets become files in a writable, memory-backed folder.
    let dir_at = args.iter().position(|a| *a == "--secrets-dir").unwrap();
    assert_writable(
        &deployment,
        hitless,
        &format!("{}/tls.crt", args[dir_at + 1]),
    );
    // The Lease names its holder by pod and lives in the pod's namespace.
    let env = hitless["env"].as_array().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    // RBAC: read-only on what the controller watches; writes only statuses and Events.
    let role = manifest("ingress/clusterrole.yaml");
    let mut writes = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        if resources.iter().all(|r| r.ends_with("/status")) {
            assert_eq!(rule["verbs"], serde_json::json!(["patch"]));
            writes.extend(resources);
        } else if resources == ["events"] {
            assert_eq!(rule["apiGroups"], serde_json::json!(["events.k8s.io"]));
            assert_eq!(rule["verbs"], serde_json::json!(["create", "patch"]));
        } else {
            assert_eq!(rule["verbs"], serde_json::json!(["get", "list", "watch"]));
        }
    }
    assert_eq!(
        writes,
        [
            "ingresses/status",
            "gatewayclasses/status",
            "gateways/status",
            "httproutes/status",
            "grpcroutes/status"
        ]
    );
    // The Lease: a namespaced Role, bound to the controller's account.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/ingress/role.yaml"),
    )
    .unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    assert_eq!(docs[0]["kind"], "Role");
    assert_eq!(
        docs[0]["rules"][0]["resources"],
        serde_json::json!(["leases"])
    );
    assert_eq!(
        docs[0]["rules"][0]["verbs"],
        serde_json::json!(["get", "create", "update"])
    );
    assert_eq!(docs[1]["subjects"][0]["name"], "hitless-ingress");
    // The GatewayClass names the controller hitless answers for.
    let class = manifest("ingress-gateway-api/gatewayclass.yaml");
    assert_eq!(class["metadata"]["name"], "hitless");
    assert_eq!(class["spec"]["controllerName"], "hitless.dev/gateway");
}

#[test]
fn gateway_drain_settings_fit_the_pod_and_its_config_passes_check() {
    let deployment = manifest("gateway/deployment.yaml");
    let configmap = manifest("gateway/configmap.yaml");
    let text = configmap["data"]["config.yaml"].as_str().unwrap();
    let config = Config::from_yaml(text).unwrap_or_else(|e| panic!("ConfigMap config: {e}"));
    let warnings: Vec<String> = config.warnings().iter().map(|w| w.to_string()).collect();
    assert!(warnings.is_empty(), "hitless check warns: {warnings:?}");

    let hitless = container(&deployment, "hitless");
    let drain = &config.drain;
    assert_eq!(
        drain.grace_period,
        Some(grace(&deployment)),
        "drain.grace_period states the pod's grace period"
    );
    assert!(grace(&deployment) >= drain.delay + drain.timeout);
    assert!(
        readiness_notice(hitless) < drain.delay,
        "readiness must turn off within the drain delay"
    );
    let socket = prestop_socket(hitless);
    assert_eq!(Path::new(&socket), drain.control_socket);
    assert_writable(&deployment, hitless, &socket);
    assert_hardened(hitless);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(
        port_named(hitless, "http"),
        config.listeners[0].port() as u64
    );
    assert_eq!(port_named(hitless, "admin"), config.admin.port() as u64);
    assert!(
        !config.admin.ip().is_loopback(),
        "probes reach admin on the pod IP"
    );

    // The Service sends traffic to the traffic port, never to admin.
    let service = manifest("gateway/service.yaml");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");

    // RBAC: exactly get/list/watch on EndpointSlices, bound to the Deployment's account.
    let role = manifest("gateway/role.yaml");
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["apiGroups"],
        serde_json::json!(["discovery.k8s.io"])
    );
    assert_eq!(rules[0]["resources"], serde_json::json!(["endpointslices"]));
    assert_eq!(
        rules[0]["verbs"],
        serde_json::json!(["get", "list", "watch"])
    );
    let binding = manifest("gateway/rolebinding.yaml");
    let account = &deployment["spec"]["template"]["spec"]["serviceAccountName"];
    assert_eq!(&binding["subjects"][0]["name"], account);
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let hpa = manifest("gateway/hpa.yaml");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
}

/// The value of `--name=value` in `args`.
fn flag<'a>(args: &'a [&'a str], name: &str) -> &'a str {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
        .unwrap_or_else(|| panic!("--{name} is not set"))
}

#[test]
fn sidecar_app_outlives_hitless_drain_within_the_grace_period() {
    let deployment = manifest("sidecar/deployment.yaml");
    let hitless = container(&deployment, "hitless");
    let app = container(&deployment, "app");
    let args: Vec<&str> = hitless["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "sidecar");
    let options = SidecarOptions {
        delay: flag(&args, "drain-delay").into(),
        timeout: flag(&args, "drain-timeout").into(),
        control_socket: flag(&args, "control-socket").into(),
        ..Default::default()
    };
    let mut config = Config::sidecar(
        flag(&args, "listen"),
        flag(&args, "upstream"),
        Some(flag(&args, "admin")),
        &options,
    )
    .unwrap_or_else(|e| panic!("sidecar flags: {e}"));
    config.drain.grace_period = Some(grace(&deployment));
    let warnings: Vec<String> = config.warnings().iter().map(|w| w.to_string()).collect();
    assert!(warnings.is_empty(), "hitless check warns: {warnings:?}");

    let drain = &config.drain;
    let app_sleep = Duration::from_secs(
        app["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .expect("the app's preStop sleep"),
    );
    assert!(
        app_sleep >= drain.delay + drain.timeout,
        "the app must stay alive until hitless has drained"
    );
    assert!(
        grace(&deployment) > app_sleep,
        "the app needs time to stop after its sleep"
    );
    assert!(readiness_notice(hitless) < drain.delay);
    let socket = prestop_socket(hitless);
    assert_eq!(Path::new(&socket), drain.control_socket);
    assert_writable(&deployment, hitless, &socket);
    assert_hardened(hitless);
    assert_hardened(app);
    // hitless forwards to the app's port, and the Service targets hitless, not the app.
    assert_eq!(
        config.backends[0].endpoints[0].port() as u64,
        port_named(app, "app")
    );
    assert_eq!(
        port_named(hitless, "http"),
        config.listeners[0].port() as u64
    );
    let service = manifest("sidecar/service.yaml");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    // A plain second container, not a native sidecar (see the timeline in the manifest).
    assert!(deployment["spec"]["template"]["spec"]
        .get("initContainers")
        .is_none());
}

#[tokio::test]
async fn alerts_name_metrics_that_hitless_exports() {
    let rules = manifest("monitoring/prometheusrule.yaml");
    let upstream = support::named_upstream("ok").await;
    let app = support::start_proxy(&support::simple_config(upstream.addr)).await;
    // One request, so that the per-route families have a series.
    let answer = support::get(&support::client(), app.traffic_addrs[0], "a", "/").await;
    assert_eq!(answer.status, 200);
    let page = support::admin_get(app.admin_addr, "/metrics").await.body;
    let mut checked = 0;
    for group in rules["spec"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            assert!(rule["alert"].is_string() && rule["labels"]["severity"].is_string());
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("hitless_") {
                    continue;
                }
                let family = word.strip_suffix("_total").unwrap_or(word);
                assert!(
                    page.contains(&format!("# TYPE {family} ")),
                    "alert {} uses {word}, which hitless does not export",
                    rule["alert"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "{checked}");
}

/// The series names a Prometheus text page can be queried by: from each `# TYPE` line, a
/// counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`, a gauge's own name; and the
/// name of every sample line.
fn series_names(page: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in page.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut words = declaration.split_whitespace();
            let (family, kind) = (words.next().unwrap(), words.next().unwrap());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            names.insert(line.split(['{', ' ']).next().unwrap().to_string());
        }
    }
    names
}

/// The hitless metric names a PromQL expression uses.
fn metric_names(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("hitless_"))
}

/// Every panel of a dashboard, the panels inside (collapsed) rows included.
fn dashboard_panels(panels: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(dashboard_panels(&panel["panels"]));
    }
    all
}

/// Every string under an `expr` key, at any depth (panel targets, rows, annotations).
fn exprs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn grafana_dashboard_queries_metrics_that_hitless_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/monitoring");
    let text = std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();

    // The ConfigMap Grafana's dashboard sidecar loads: the file, the sidecar's label, a stable name.
    let kustomization = manifest("monitoring/kustomization.yaml");
    let generator = kustomization["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| {
            g["files"].as_array().into_iter().flatten().any(|f| {
                let f = f.as_str().unwrap();
                f.rsplit('=').next() == Some("grafana-dashboard.json")
            })
        })
        .expect("a configMapGenerator with grafana-dashboard.json");
    assert_eq!(generator["name"], "hitless-grafana-dashboard");
    assert_eq!(generator["options"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        kustomization["generatorOptions"]["disableNameSuffixHash"],
        true
    );

    // Importable as is: a datasource variable that every panel and query uses, no `__inputs`
    // left to fill in, unique panel ids, every panel placed.
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(dashboard.get("__inputs").is_none());
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert!(variable("backend")["definition"]
        .as_str()
        .unwrap()
        .starts_with("label_values(hitless_backend_endpoints"));
    let datasource = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let panels = dashboard_panels(&dashboard["panels"]);
    let mut ids = std::collections::BTreeSet::new();
    let mut panel_names = std::collections::BTreeSet::new();
    for panel in &panels {
        let title = &panel["title"];
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id used twice"
        );
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0, "{title}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], datasource, "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            assert_eq!(target["datasource"], datasource, "{title}");
            panel_names.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    // A panel for each of: requests and errors by cause, retries and the retry budget,
    // endpoints by state, held requests, the drain phase, upstream connections (closed by
    // reason, open, idle), the learned keep-alive, client connections against the limit and the
    // listen queue, config reloads.
    for name in [
        "hitless_requests_total",
        "hitless_request_duration_seconds_bucket",
        "hitless_proxy_errors_total",
        "hitless_retries_total",
        "hitless_retry_budget_exhausted_total",
        "hitless_backend_endpoints",
        "hitless_backend_endpoints_ejected",
        "hitless_backend_endpoints_unready",
        "hitless_backend_endpoints_unreachable",
        "hitless_held_requests_total",
        "hitless_draining",
        "hitless_upstream_connections_closed_total",
        "hitless_upstream_connections_open",
        "hitless_upstream_connections_idle",
        "hitless_upstream_keepalive_learned_seconds",
        "hitless_downstream_connections_open",
        "hitless_max_connections",
        "hitless_connection_limit_reached_total",
        "hitless_listen_overflows",
        "hitless_config_reloads_total",
    ] {
        assert!(panel_names.contains(name), "no panel queries {name}");
    }

    // The families that have no series until something happens get one: requests (a request),
    // retries (round-robin sends one try to a refused endpoint), the learned keep-alive (the
    // other endpoint announces `Keep-Alive: timeout=5`).
    let dead = support::refused_addr().await;
    let announcing = support::upstream(|_req| async move {
        let mut answer = http::Response::new(support::full("ok"));
        answer
            .headers_mut()
            .insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
        answer
    })
    .await;
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{dead}\", \"{}\"]\n    balance: round_robin\nroutes:\n  - name: app\n    backend: app\n",
        announcing.addr
    );
    let app = support::start_proxy(&config).await;
    let client = support::client();
    for _ in 0..4 {
        let answer = support::get(&client, app.traffic_addrs[0], "a", "/").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let page = support::admin_get(app.admin_addr, "/metrics").await.body;
    let exported = series_names(&page);

    // Every query, variable and annotation names only series that exist.
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    for variable in variables {
        queries.extend(variable["definition"].as_str());
        queries.extend(variable["query"].as_str());
        queries.extend(variable["query"]["query"].as_str());
    }
    let mut checked = std::collections::BTreeSet::new();
    for query in &queries {
        for name in metric_names(query) {
            assert!(
                exported.contains(name),
                "the dashboard queries {name}, which hitless does not export (in: {query})"
            );
            checked.insert(name);
        }
    }
    assert!(checked.len() >= 25, "{checked:?}");
}

#[test]
fn the_dockerfile_exposes_the_ports_the_manifests_use() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let exposed: Vec<u64> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u64>().unwrap()))
        .collect();
    for (path, names) in [
        ("gateway/deployment.yaml", &["http", "admin"][..]),
        ("sidecar/deployment.yaml", &["http", "admin"][..]),
        ("ingress/deployment.yaml", &["http", "https", "admin"][..]),
    ] {
        let deployment = manifest(path);
        let hitless = container(&deployment, "hitless");
        for &name in names {
            let port = port_named(hitless, name);
            assert!(
                exposed.contains(&port),
                "{path}: {name} {port} not in EXPOSE {exposed:?}"
            );
        }
        assert!(
            hitless["image"] == "hitless",
            "{path}: the image is set by the kustomization's images:"
        );
    }
    assert!(dockerfile.contains("FROM scratch"));
    assert!(dockerfile.contains("USER 65532"));
}
