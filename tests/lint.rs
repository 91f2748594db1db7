//! `hitless lint` end to end: every rule fires on the `bad/` fixtures at exactly the objects and
//! fields expected, and nowhere in `good/` or in the project's own `k8s/`; inputs come as
//! folders, multi-document files, `kind: List` and standard input; malformed YAML is an error
//! naming its file, never a panic (also under 2,000 random mutations); the text and JSON
//! reports and the exit status say what the findings mean.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hitless::lint::{self, Finding, Format, LintError, Severity, RULES};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures(which: &str) -> PathBuf {
    root().join("tests/fixtures/lint").join(which)
}

/// (file name, rule, object, field): what a finding is about, without its wording.
fn keys(findings: &[Finding]) -> Vec<(String, &'static str, String, String)> {
    findings
        .iter()
        .map(|f| {
            let file = Path::new(&f.file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (file, f.rule, f.object.clone(), f.field.clone())
        })
        .collect()
}

fn lint_dir(path: &Path) -> Vec<Finding> {
    lint::lint_paths(&[path.to_path_buf()], None)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SPEC: &str = "spec.template.spec";

#[test]
fn bad_fixtures_give_exactly_the_expected_findings() {
    let findings = lint_dir(&fixtures("bad"));
    let c = |i: usize, rest: &str| format!("{SPEC}.containers[{i}].{rest}");
    let grace = format!("{SPEC}.terminationGracePeriodSeconds");
    let nginx = |a: &str| format!("metadata.annotations[\"nginx.ingress.kubernetes.io/{a}\"]");
    let expected: Vec<(&str, &str, &str, String)> = vec![
        (
            "gateway.yaml",
            "hitless-grace-period",
            "ConfigMap/edge/edge-gateway",
            "data[\"config.yaml\"].drain.grace_period".into(),
        ),
        (
            "gateway.yaml",
            "hitless-drain-grace",
            "Deployment/edge/edge-gateway",
            grace.clone(),
        ),
        (
            "httproute.yaml",
            "httproute-timeouts",
            "HTTPRoute/shop/checkout",
            "spec.rules[0].timeouts.backendRequest".into(),
        ),
        (
            "ingress.yaml",
            "nginx-buffer-size",
            "Ingress/shop/payments",
            nginx("proxy-buffer-size"),
        ),
        (
            "ingress.yaml",
            "nginx-next-upstream",
            "Ingress/shop/payments",
            nginx("proxy-next-upstream"),
        ),
        (
            "ingress.yaml",
            "nginx-read-timeout",
            "Ingress/shop/payments",
            nginx("proxy-read-timeout"),
        ),
        (
            "ingress.yaml",
            "nginx-backend-protocol",
            "Ingress/shop/payments",
            "spec.rules[0].http.paths[0].backend.service.port".into(),
        ),
        (
            "ingress.yaml",
            "nginx-keepalive",
            "Ingress/shop/search",
            nginx("upstream-keepalive-timeout"),
        ),
        (
            "list.yaml",
            "prestop-missing",
            "Deployment/shop/listed",
            c(0, "lifecycle.preStop"),
        ),
        (
            "sidecar.yaml",
            "hitless-prestop-socket",
            "Deployment/shop/orders",
            c(0, "lifecycle.preStop.exec.command"),
        ),
        (
            "sidecar.yaml",
            "readiness-too-slow",
            "Deployment/shop/orders",
            c(0, "readinessProbe"),
        ),
        (
            "sidecar.yaml",
            "hitless-app-outlives-drain",
            "Deployment/shop/orders",
            c(1, "lifecycle.preStop"),
        ),
        (
            "sidecar.yaml",
            "hitless-drain-grace",
            "Deployment/shop/orders",
            grace.clone(),
        ),
        (
            "workloads.yaml",
            "prestop-missing",
            "Deployment/shop/no-prestop",
            c(0, "lifecycle.preStop"),
        ),
        (
            "workloads.yaml",
            "readiness-missing",
            "Deployment/shop/no-readiness",
            c(0, "readinessProbe"),
        ),
        (
            "workloads.yaml",
            "readiness-equals-liveness",
            "Deployment/shop/same-probes",
            c(0, "readinessProbe"),
        ),
        (
            "workloads.yaml",
            "grace-shorter-than-prestop",
            "Deployment/shop/short-grace",
            grace.clone(),
        ),
        (
            "workloads.yaml",
            "readiness-too-slow",
            "StatefulSet/shop/slow-readiness",
            c(0, "readinessProbe"),
        ),
    ];
    let expected: Vec<(String, &str, String, String)> = expected
        .into_iter()
        .map(|(f, r, o, field)| (f.to_string(), r, o.to_string(), field))
        .collect();
    assert_eq!(
        keys(&findings),
        expected,
        "{}",
        lint::render(&findings, Format::Text)
    );

    // Every rule fires in bad/, with the severity the registry gives it.
    let fired: BTreeSet<&str> = findings.iter().map(|f| f.rule).collect();
    let all: BTreeSet<&str> = RULES.iter().map(|r| r.id).collect();
    assert_eq!(fired, all);
    for finding in &findings {
        let rule = RULES.iter().find(|r| r.id == finding.rule);
        assert_eq!(rule.map(|r| r.severity), Some(finding.severity));
        assert!(!finding.message.is_empty() && !finding.fix.is_empty());
        assert!(!finding.fix.contains('\n') && !finding.message.contains('\n'));
    }
    assert_eq!(lint::exit_code(&findings), 1);
}

#[test]
fn messages_carry_the_numbers_that_are_wrong() {
    let findings = lint_dir(&fixtures("bad"));
    let find = |rule: &str, object: &str| {
        findings
            .iter()
            .find(|f| f.rule == rule && f.object == object)
            .unwrap_or_else(|| panic!("no {rule} on {object}"))
    };
    let drain = find("hitless-drain-grace", "Deployment/shop/orders");
    assert!(
        drain.message.contains("terminationGracePeriodSeconds 20")
            && drain.message.contains("delay 5s + timeout 20s = 25s"),
        "{}",
        drain.message
    );
    assert_eq!(
        drain.fix,
        "set terminationGracePeriodSeconds to at least 25, or shorten the drain"
    );
    let gateway = find("hitless-drain-grace", "Deployment/edge/edge-gateway");
    assert!(
        gateway
            .message
            .contains("= 40s, from ConfigMap/edge/edge-gateway)"),
        "{}",
        gateway.message
    );
    let grace = find("grace-shorter-than-prestop", "Deployment/shop/short-grace");
    assert!(
        grace
            .message
            .contains("terminationGracePeriodSeconds (default 30)")
            && grace.message.contains("sleep 40s"),
        "{}",
        grace.message
    );
    let next = find("nginx-next-upstream", "Ingress/shop/payments");
    assert_eq!(
        next.fix,
        "set nginx.ingress.kubernetes.io/proxy-next-upstream: \"http_503 error timeout http_502\""
    );
    let keepalive = find("nginx-keepalive", "Ingress/shop/search");
    assert!(
        keepalive.message.contains("60s (the default)")
            && keepalive.message.contains("on Service/shop/search"),
        "{}",
        keepalive.message
    );
    let socket = find("hitless-prestop-socket", "Deployment/shop/orders");
    assert!(socket.fix.contains("--socket /run/hitless/hitless.sock"));
    let slow = find("readiness-too-slow", "StatefulSet/shop/slow-readiness");
    assert!(
        slow.message
            .contains("(periodSeconds 10 × failureThreshold 3)"),
        "{}",
        slow.message
    );
}

#[test]
fn good_fixtures_give_no_findings() {
    let findings = lint_dir(&fixtures("good"));
    assert!(
        findings.is_empty(),
        "{}",
        lint::render(&findings, Format::Text)
    );
    assert_eq!(lint::exit_code(&findings), 0);
    assert_eq!(lint::render(&findings, Format::Text), "no findings\n");
    assert_eq!(lint::render(&findings, Format::Json), "[]\n");
}

#[test]
fn good_fixtures_sit_at_the_edge_of_each_rule() {
    // One step past each value in good/ makes exactly its rule fire: the good fixtures pass
    // because the rules read them, not because a rule skipped them.
    let edges: &[(&str, &str, &str, &str)] = &[
        (
            "sidecar.yaml",
            "\"10s\"]",
            "\"13s\"]",
            "hitless-app-outlives-drain",
        ),
        (
            "sidecar.yaml",
            "failureThreshold: 3",
            "failureThreshold: 4",
            "readiness-too-slow",
        ),
        (
            "sidecar.yaml",
            "\"drain\"]",
            "\"drain\", \"--socket\", \"/run/x.sock\"]",
            "hitless-prestop-socket",
        ),
        (
            "sidecar.yaml",
            "terminationGracePeriodSeconds: 25",
            "terminationGracePeriodSeconds: 15",
            "grace-shorter-than-prestop",
        ),
        (
            "sidecar.yaml",
            "terminationGracePeriodSeconds: 25",
            "terminationGracePeriodSeconds: 12",
            "grace-shorter-than-prestop hitless-drain-grace",
        ),
        (
            "gateway.yaml",
            "grace_period: 30s",
            "grace_period: 31s",
            "hitless-grace-period",
        ),
        (
            "gateway.yaml",
            "control_socket: /var/run/hitless/hitless.sock",
            "control_socket: /tmp/other.sock",
            "hitless-prestop-socket",
        ),
        (
            "gateway.yaml",
            "      grace_period: 30s\n",
            "      timeout: 26s\n",
            "hitless-drain-grace",
        ),
        (
            "ingress.yaml",
            "keepalive-timeout: \"4\"",
            "keepalive-timeout: \"5\"",
            "nginx-keepalive",
        ),
        (
            "ingress.yaml",
            "timeout: 75s",
            "timeout: 60s",
            "nginx-keepalive",
        ),
        (
            "ingress.yaml",
            "read-timeout: \"25\"",
            "read-timeout: \"30\"",
            "nginx-read-timeout",
        ),
        ("ingress.yaml", "\"16k\"", "\"4k\"", "nginx-buffer-size"),
        (
            "ingress.yaml",
            "\"HTTPS\"",
            "\"HTTP\"",
            "nginx-backend-protocol",
        ),
        (
            "ingress.yaml",
            "error timeout http_502",
            "error timeout",
            "nginx-next-upstream",
        ),
        (
            "httproute.yaml",
            "backendRequest: 90s",
            "backendRequest: 91s",
            "httproute-timeouts",
        ),
        (
            "workloads.yaml",
            "terminationGracePeriodSeconds: 40",
            "terminationGracePeriodSeconds: 10",
            "grace-shorter-than-prestop",
        ),
        (
            "workloads.yaml",
            "periodSeconds: 3",
            "periodSeconds: 4",
            "readiness-too-slow",
        ),
        (
            "workloads.yaml",
            "{path: /ready, port: http}",
            "{path: /healthz, port: 8080}",
            "readiness-equals-liveness",
        ),
        (
            "workloads.yaml",
            "readinessProbe:\n            exec:",
            "startupProbe:\n            exec:",
            "readiness-missing",
        ),
        (
            "workloads.yaml",
            "preStop:\n              httpGet",
            "postStart:\n              httpGet",
            "prestop-missing",
        ),
    ];
    for (file, from, to, rules) in edges {
        let text = std::fs::read_to_string(fixtures("good").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(text.matches(from).count(), 1, "{file}: {from:?}");
        let text = text.replacen(from, to, 1);
        let findings = lint::lint_str(file, &text).unwrap_or_else(|e| panic!("{e}"));
        let fired: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        let mut expected: Vec<&str> = rules.split(' ').collect();
        expected.sort();
        let mut sorted = fired.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "{file}: {from:?} -> {to:?}");
    }
}

#[test]
fn the_projects_own_manifests_give_no_findings() {
    let findings = lint_dir(&root().join("k8s"));
    assert!(
        findings.is_empty(),
        "{}",
        lint::render(&findings, Format::Text)
    );

    // The same as kustomize output on stdin: one stream, every object in namespace shop.
    let mut stream = String::new();
    for dir in ["gateway", "sidecar", "monitoring"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("k8s").join(dir))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for file in files.iter().filter(|f| !f.ends_with("kustomization.yaml")) {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let text = text.replacen("metadata:\n", "metadata:\n  namespace: shop\n", 1);
            stream.push_str("---\n");
            stream.push_str(&text);
        }
    }
    assert!(stream.matches("namespace: shop").count() >= 10);
    let findings = lint::lint_paths(&[PathBuf::from("-")], Some(&stream));
    let findings = findings.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        findings.is_empty(),
        "{}",
        lint::render(&findings, Format::Text)
    );

    // The rules that tests/manifests.rs checked read these manifests: one step out fires them.
    for (from, to, expected) in [
        (
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: 24",
            vec![
                ("Deployment/shop/shop-api", "grace-shorter-than-prestop"),
                ("Deployment/shop/shop-api", "hitless-drain-grace"),
            ],
        ),
        (
            "grace_period: 30s",
            "grace_period: 45s",
            vec![("ConfigMap/shop/hitless-gateway", "hitless-grace-period")],
        ),
        (
            "control_socket: /run/hitless/hitless.sock",
            "control_socket: /tmp/hitless.sock",
            vec![("Deployment/shop/hitless-gateway", "hitless-prestop-socket")],
        ),
        (
            "seconds: 30",
            "seconds: 24",
            vec![("Deployment/shop/shop-api", "hitless-app-outlives-drain")],
        ),
    ] {
        assert_eq!(stream.matches(from).count(), 1, "{from}");
        let changed = stream.replacen(from, to, 1);
        let findings = lint::lint_paths(&[PathBuf::from("-")], Some(&changed));
        let findings = findings.unwrap_or_else(|e| panic!("{e}"));
        let fired: Vec<(&str, &str)> = findings
            .iter()
            .map(|f| (f.object.as_str(), f.rule))
            .collect();
        assert_eq!(fired, expected, "{from} -> {to}");
    }
}

#[test]
fn a_gateway_without_its_configmap_in_the_input_is_not_guessed_at() {
    // Alone, the gateway Deployment's drain settings are unknown: no socket or grace finding
    // from defaults that its ConfigMap overrides.
    let path = root().join("k8s/gateway/deployment.yaml");
    let findings = lint::lint_paths(&[path], None).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        findings.is_empty(),
        "{}",
        lint::render(&findings, Format::Text)
    );
}

const NO_PROBE: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME}
spec:
  template:
    spec:
      containers:
        - name: app
          image: app:1
          ports: [{containerPort: 80}]
          lifecycle: {preStop: {sleep: {seconds: 5}}}
";

fn no_probe(name: &str) -> String {
    NO_PROBE.replace("NAME", name)
}

#[test]
fn multi_document_files_and_lists_are_read_whole() {
    let text = format!(
        "# leading comment\n---\n{}--- # second\n{}---\n\n---\nplain: mapping without kind\n\
         ---\n- a sequence\n---\njust a scalar\n",
        no_probe("one"),
        no_probe("two")
    );
    let findings = lint::lint_str("multi.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let objects: Vec<&str> = findings.iter().map(|f| f.object.as_str()).collect();
    assert_eq!(objects, ["Deployment/one", "Deployment/two"]);
    assert!(findings.iter().all(|f| f.file == "multi.yaml"));

    let items = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        [no_probe("a"), no_probe("b")]
            .iter()
            .map(|doc| {
                let mut lines = doc.trim_start_matches('\n').lines();
                let first = lines.next().unwrap_or_default();
                let rest: String = lines.map(|l| format!("    {l}\n")).collect();
                format!("  - {first}\n{rest}")
            })
            .collect::<String>()
    );
    let findings = lint::lint_str("list.yaml", &items).unwrap_or_else(|e| panic!("{e}"));
    let objects: Vec<&str> = findings.iter().map(|f| f.object.as_str()).collect();
    assert_eq!(objects, ["Deployment/a", "Deployment/b"], "{items}");
}

#[test]
fn standard_input_is_read_for_a_dash() {
    let text = no_probe("piped");
    let findings = lint::lint_paths(&[PathBuf::from("-")], Some(&text));
    let findings = findings.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(keys(&findings).len(), 1);
    assert_eq!(findings[0].file, "<stdin>");
    assert_eq!(findings[0].rule, "readiness-missing");

    let error = lint::lint_paths(&[PathBuf::from("-")], None);
    assert!(matches!(error, Err(LintError::NoStdin)), "{error:?}");
}

/// A folder of its own under the system's temporary folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hitless-lint-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn invalid_yaml_is_an_error_naming_the_file() {
    let error = lint::lint_str("broken.yaml", "kind: Deployment\nspec: [1, 2\nname: x\n");
    let Err(error @ LintError::Yaml { .. }) = error else {
        panic!("expected a YAML error, got {error:?}");
    };
    let message = error.to_string();
    assert!(
        message.starts_with("broken.yaml: not valid YAML: ") && message.contains("line 3"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(LintError::EXIT_CODE, 64);

    let dir = Scratch::new("invalid");
    dir.write("a-good.yaml", &no_probe("fine"));
    let bad = dir.write("b-bad.yml", "metadata:\n  name: x\n  name: y\n");
    dir.write("notes.txt", "not: [yaml");
    let error = lint::lint_paths(std::slice::from_ref(&dir.0), None);
    match error {
        Err(LintError::Yaml { file, message }) => {
            assert_eq!(file, bad.display().to_string());
            assert!(message.contains("duplicate"), "{message}");
        }
        other => panic!("expected a YAML error, got {other:?}"),
    }

    let missing = dir.0.join("nowhere.yaml");
    let error = lint::lint_paths(std::slice::from_ref(&missing), None);
    match error {
        Err(e @ LintError::Read { .. }) => {
            assert!(e.to_string().contains(&missing.display().to_string()))
        }
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn folders_are_walked_for_yaml_only_in_a_sorted_order() {
    let dir = Scratch::new("walk");
    std::fs::create_dir_all(dir.0.join("nested/deeper")).unwrap_or_else(|e| panic!("{e}"));
    dir.write("nested/deeper/z.yml", &no_probe("z"));
    dir.write("b.yaml", &no_probe("b"));
    dir.write("a.json", &no_probe("json"));
    dir.write("README.md", "# not a manifest: [");
    let findings = lint_dir(&dir.0);
    let objects: Vec<&str> = findings.iter().map(|f| f.object.as_str()).collect();
    assert_eq!(objects, ["Deployment/b", "Deployment/z"]);
    // A file named explicitly is read whatever its extension.
    let explicit =
        lint::lint_paths(&[dir.0.join("a.json")], None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(explicit.len(), 1);
}

#[test]
fn json_output_has_every_field() {
    let findings = lint_dir(&fixtures("bad"));
    let json = lint::render(&findings, Format::Json);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    let list = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {json}"));
    assert_eq!(list.len(), findings.len());
    for (item, finding) in list.iter().zip(&findings) {
        for key in [
            "rule", "severity", "file", "object", "field", "message", "fix",
        ] {
            assert!(item[key].is_string(), "{key} missing in {item}");
        }
        assert_eq!(item["rule"], finding.rule);
        assert_eq!(item["field"], finding.field.as_str());
        let severity = match finding.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        assert_eq!(item["severity"], severity);
    }
}

#[test]
fn text_output_reads_like_a_compiler() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: shop}\n\
        spec:\n  template:\n    spec:\n      containers:\n        - name: api\n          \
        image: api:1\n          ports: [{containerPort: 80}]\n          \
        readinessProbe: {httpGet: {path: /ready, port: 80}}\n          \
        lifecycle: {preStop: {sleep: {seconds: 5}}}\n";
    let findings = lint::lint_str("api.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lint::render(&findings, Format::Text),
        "warning[readiness-too-slow]: container \"api\"'s readiness probe takes up to 30s to \
         notice a drain (periodSeconds 10 × failureThreshold 3), longer than its preStop sleep \
         5s: load balancers that follow readiness send requests after it stops serving\n  \
         --> api.yaml: Deployment/shop/api: spec.template.spec.containers[0].readinessProbe\n  \
         fix: make periodSeconds × failureThreshold at most 5s (e.g. periodSeconds: 1, \
         failureThreshold: 3)\n\n0 errors, 1 warning\n"
    );
    // Warnings alone do not fail the run.
    assert_eq!(lint::exit_code(&findings), 0);
    assert_eq!(lint::exit_code(&[]), 0);
}

#[test]
fn format_names_parse() {
    assert_eq!("text".parse::<Format>(), Ok(Format::Text));
    assert_eq!("json".parse::<Format>(), Ok(Format::Json));
    assert!("yaml".parse::<Format>().is_err());
}

/// Seeded xorshift64: the same mutations on every run, no `rand` crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&str] = &[
    ":",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "\n",
    " ",
    "    ",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "!!int ",
    "|",
    ">",
    "0",
    "-1",
    "1.5",
    "99999999999999999999999",
    "18446744073709551615",
    "null",
    "~",
    "---\n",
    "...\n",
    "x: y\n",
    "\t",
    "é",
    "kind: List\nitems:\n",
    "? ",
    "<<: *a\n",
    "sleep",
    "hitless",
    "--socket",
    "=",
    "seconds: ",
    "0s",
    "1h",
    "drain",
    "\u{feff}",
];

fn mutate(text: &str, rng: &mut XorShift) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(6) {
            0 => {
                let end = (at + 1 + rng.below(20)).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            1 | 2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                chars.splice(at..at, token.chars());
            }
            3 => {
                // Duplicate or drop a whole line.
                let text: String = chars.iter().collect();
                let mut lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    if rng.below(2) == 0 {
                        lines.insert(i, lines[i]);
                    } else {
                        lines.remove(i);
                    }
                }
                chars = lines.join("\n").chars().collect();
            }
            4 => {
                // Change a digit: numbers are what the rules compute with.
                let digits: Vec<usize> = (0..chars.len())
                    .filter(|i| chars[*i].is_ascii_digit())
                    .collect();
                if !digits.is_empty() {
                    let i = digits[rng.below(digits.len())];
                    chars[i] = char::from(b'0' + rng.below(10) as u8);
                }
            }
            _ => chars.truncate(at),
        }
    }
    chars.into_iter().collect()
}

#[test]
fn two_thousand_mutated_fixtures_never_panic() {
    let mut sources = Vec::new();
    for which in ["bad", "good"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures(which))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            sources.push(std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    assert!(sources.len() >= 10);
    let mut rng = XorShift(0x5eed_1e55_0bad_cafe);
    let (mut parsed, mut rejected) = (0, 0);
    for round in 0..2000 {
        let source = &sources[round % sources.len()];
        let text = mutate(source, &mut rng);
        // A panic fails the test and names the round; the input is printed for replay.
        let result = std::panic::catch_unwind(|| match lint::lint_str("mutated.yaml", &text) {
            Ok(findings) => {
                let _ = lint::render(&findings, Format::Text);
                let _ = lint::render(&findings, Format::Json);
                let _ = lint::exit_code(&findings);
                true
            }
            Err(e) => {
                assert!(e.to_string().starts_with("mutated.yaml: "), "{e}");
                false
            }
        });
        match result {
            Ok(true) => parsed += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("round {round} panicked on:\n{text}"),
        }
    }
    // Both paths were exercised: the mutations are neither all harmless nor all fatal.
    assert!(
        parsed > 200 && rejected > 200,
        "{parsed} parsed, {rejected} rejected"
    );
}

#[test]
fn hostile_yaml_is_rejected_not_followed() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(lint::lint_str("deep.yaml", &deep).is_err());
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..20 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("l{}", i - 1)
        };
        laughs.push_str(&format!(
            "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    assert!(lint::lint_str("laughs.yaml", &laughs).is_err());
}
