//! The real binary: `sidecar` flags mode end to end (ready, proxy, metrics, SIGTERM -> exit 0),
//! `check` output and warnings, invalid config -> exit 64 naming the field, `--version`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

fn sigterm(pid: u32) {
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sidecar_proxies_reports_and_stops_on_sigterm() {
    let app_server = named_upstream("hello from the app").await;
    let (port, admin_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let upstream = app_server.addr.to_string();
    let mut proxy = spawn_hitless(&[
        "sidecar",
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--admin",
        &admin,
    ]);
    let admin_addr = admin.parse().unwrap();
    wait_ready(admin_addr).await;

    let c = client();
    let answer = get(&c, listen.parse().unwrap(), "x", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "hello from the app");
    assert_eq!(admin_get(admin_addr, "/healthz").await.status, 200);
    let page = admin_get(admin_addr, "/metrics").await.body;
    assert_eq!(
        metric(
            &page,
            "hitless_requests_total{route=\"app\",backend=\"app\",status=\"200\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert!(
        page.contains(
            "hitless_request_duration_seconds_bucket{le=\"+Inf\",route=\"app\",backend=\"app\"} 1"
        ),
        "{page}"
    );

    sigterm(proxy.child.id());
    let started = Instant::now();
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn access_log_is_one_json_line_per_request_on_stdout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app_server = rt.block_on(named_upstream("a"));
    let (port, admin_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let child = hitless_bin()
        .args([
            "sidecar",
            "--listen",
            &listen,
            "--upstream",
            &app_server.addr.to_string(),
            "--admin",
            &admin,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rt.block_on(async {
        wait_ready(admin.parse().unwrap()).await;
        let c = client();
        get(
            &c,
            listen.parse().unwrap(),
            "shop.example.com",
            "/cart?id=1",
        )
        .await;
    });
    sigterm(child.id());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["host"], "shop.example.com");
    assert_eq!(v["path"], "/cart");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "app");
    assert_eq!(v["backend"], "app");
    assert_eq!(v["endpoint"], app_server.addr.to_string());
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["bytes"], 1);
    assert_eq!(v["cause"], "-");
    assert!(v["duration_ms"].as_f64().is_some());
    assert_eq!(v["request_id"].as_str().map(str::len), Some(32));
}

fn write_config(text: &str) -> tempfile_path::TempPath {
    tempfile_path::write(text)
}

/// A tiny temp-file helper (no extra crate): removed on drop.
mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    pub struct TempPath(pub PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    pub fn write(text: &str) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "hitless-test-{}-{}.yaml",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, text).unwrap();
        TempPath(path)
    }
}

#[test]
fn invalid_config_exits_64_naming_the_field_before_binding() {
    let port = free_port();
    let config = write_config(&format!(
        "listeners: [{{bind: \"127.0.0.1:{port}\"}}]\nbackends:\n  api: {{endpoints: [\"127.0.0.1:1\"]}}\nroutes:\n  - backend: api\n  - backend: api\n  - backend: api\n    timeouts: {{request: 5}}\n"
    ));
    let out = hitless_bin()
        .args(["run", "--config"])
        .arg(&config.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[2].timeouts.request: expected a duration like \"5s\", got \"5\""),
        "{stderr}"
    );
    // Nothing was bound: the port is still free.
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}

#[test]
fn check_prints_effective_config_and_warns_with_the_fix() {
    let config = write_config(
        "backends:\n  api:\n    endpoints: [\"127.0.0.1:3000\"]\n    upstream_keepalive_timeout: 1s\nroutes:\n  - backend: api\n    timeouts: {backend_request: 45s}\n",
    );
    let out = hitless_bin()
        .args(["check", "--config"])
        .arg(&config.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for default in [
        "connect_timeout: 1s",
        "idle_timeout: 1s 500ms",
        "request: 30s",
        "header_read: 10s",
        "bind: 127.0.0.1:9901",
    ] {
        assert!(stdout.contains(default), "missing {default} in\n{stdout}");
    }
    assert!(stderr.contains("warning: routes[0].timeouts.backend_request: per-try timeout 45s exceeds the request timeout 30s"), "{stderr}");
    assert!(
        stderr.contains("set backends.api.pool.idle_timeout below 1s"),
        "{stderr}"
    );

    let strict = hitless_bin()
        .args(["check", "--strict", "--config"])
        .arg(&config.0)
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn shipped_examples_pass_check() {
    for example in [
        "examples/gateway.yaml",
        "examples/sidecar-equivalent.yaml",
        "examples/loadtest-target.yaml",
    ] {
        let out = hitless_bin()
            .args(["check", "--strict", "--config", example])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn version_and_help() {
    let out = hitless_bin().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hitless "));
    let out = hitless_bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "sidecar", "check"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = hitless_bin().args(["sidecar"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --upstream is a usage error"
    );
}

/// `hitless lint`: the project's own manifests have no finding (exit 0); the bad fixtures
/// exit 1 with rule ids; JSON on request; stdin as kustomize output; unreadable input is 64.
#[test]
fn lint_reports_findings_with_exit_codes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = hitless_bin()
        .args(["lint"])
        .arg(root.join("k8s"))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "no findings");

    let bad = hitless_bin()
        .args(["lint", "--format", "json"])
        .arg(root.join("tests/fixtures/lint/bad"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let findings: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    let rules: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    for rule in [
        "readiness-missing",
        "nginx-keepalive",
        "hitless-drain-grace",
        "httproute-timeouts",
    ] {
        assert!(rules.contains(&rule), "{rule} in {rules:?}");
    }

    let mut piped = hitless_bin()
        .args(["lint", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let text =
        std::fs::read_to_string(root.join("tests/fixtures/lint/bad/httproute.yaml")).unwrap();
    {
        use std::io::Write;
        let mut stdin = piped.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = piped.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("error[httproute-timeouts]"));

    let missing = hitless_bin()
        .args(["lint", "/nonexistent/manifests"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
}
