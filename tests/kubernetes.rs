//! contrib/kubernetes/, rendered and validated offline, no cluster needed:
//!
//! * every kustomization (the base and each overlay) renders with `kubectl
//!   kustomize`, and every resource it renders passes `kubernetes-validate
//!   --strict` against the Kubernetes 1.30 schemas that package bundles. The
//!   one kind without a bundled schema, the Prometheus Operator's
//!   ServiceMonitor (a CRD), is checked here field by field instead, and any
//!   other kind without a schema fails;
//! * validation can fail: a rendered DaemonSet with an unknown field, or a
//!   field of the wrong type, is rejected (so a pass is not vacuous);
//! * what matters to an operator holds in each rendering: hostNetwork with
//!   ClusterFirstWithHostNet, readiness on /readyz and liveness on /healthz of
//!   the metrics port the server is told to listen on, the ConfigMap's
//!   turnserver.toml passes `ferroturn check` and holds no secret, the REST
//!   secret and store URL come from a Secret, the admin socket is on a
//!   writable emptyDir, the preStop hook drains with the configured deadline
//!   and terminationGracePeriodSeconds exceeds it, a locked-down
//!   securityContext, resource requests, scrape annotations, and the
//!   ServiceMonitor reaching the pods' metrics port through its Service;
//! * the rendered preStop hook, run by `sh` against the real binary holding
//!   an allocation, starts a drain and returns only once the server has
//!   exited at the drain deadline; `serve` takes FERROTURN_DB and
//!   FERROTURN_AUTH_SECRET from the environment.
//!
//! kubectl comes with Debian's `kubernetes-client` package (kustomize v2.0.3)
//! or any newer kubectl, kubernetes-validate (and PyYAML, which it depends on
//! and which splits the rendered YAML here) from PyPI; scripts/test.sh installs
//! both when missing. Without them these tests fail rather than skip.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Every kustomization under contrib/kubernetes, with what its rendering must
/// show. `every_kustomization_is_listed` keeps this list complete.
const KUSTOMIZATIONS: &[Expect] = &[
    Expect {
        dir: "contrib/kubernetes/base",
        namespace: None,
        drain_deadline: 300,
        store_required: false,
        service_monitor: false,
    },
    Expect {
        dir: "contrib/kubernetes/overlays/production",
        namespace: Some("turn"),
        drain_deadline: 900,
        store_required: true,
        service_monitor: true,
    },
];

/// The Kubernetes version whose schemas the manifests must pass.
const KUBERNETES_VERSION: &str = "1.30.0";

/// Where the container finds its configuration.
const CONFIG_PATH: &str = "/etc/ferroturn/turnserver.toml";

/// terminationGracePeriodSeconds must exceed drain.deadline by at least this
/// much: the hook has to start, the server to end its allocations and exit.
const GRACE_MARGIN_SECS: u64 = 30;

/// Kinds that kubernetes-validate has no schema for (CRDs), checked by
/// [`check_service_monitor`] instead.
const CRD_KINDS: &[&str] = &["ServiceMonitor"];

struct Expect {
    dir: &'static str,
    namespace: Option<&'static str>,
    drain_deadline: u64,
    store_required: bool,
    service_monitor: bool,
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `name` on PATH, or a failure saying how to get it.
fn tool(name: &str, how: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is not on PATH: {how}"))
}

fn kubectl() -> PathBuf {
    tool(
        "kubectl",
        "run scripts/test.sh, which installs Debian's `kubernetes-client` package, \
         or install any kubectl from 1.20 on (`kubectl kustomize` renders offline)",
    )
}

fn kubernetes_validate() -> PathBuf {
    tool(
        "kubernetes-validate",
        "run scripts/test.sh, which runs `pip install kubernetes-validate`, or run it yourself",
    )
}

fn output_text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Splits a multi-document YAML stream into its documents, as JSON, with
/// PyYAML (installed with kubernetes-validate: the crate has no YAML parser).
fn yaml_documents(yaml: &str) -> Vec<Value> {
    let python = tool(
        "python3",
        "kubernetes-validate and PyYAML need Python 3 (scripts/test.sh uses pip)",
    );
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(yaml.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(
        out.status.success(),
        "python3 could not split the YAML (PyYAML comes with `pip install \
         kubernetes-validate`):\n{stderr}"
    );
    serde_json::from_str(&stdout).expect("python3 printed JSON")
}

/// `kubectl kustomize DIR`, split into resources. Fails on any message other
/// than kustomize v5's deprecation warnings for the fields kept for v2.0.3.
fn render(dir: &str) -> Vec<Value> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(repo(dir))
        .output()
        .expect("kubectl runs");
    let (stdout, stderr) = output_text(&out);
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{stderr}"
    );
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let known = [
            "'bases' is deprecated",
            "'patchesStrategicMerge' is deprecated",
        ];
        assert!(
            line.starts_with("# Warning: ") && known.iter().any(|k| line.contains(k)),
            "kubectl kustomize {dir} says something unexpected:\n{stderr}"
        );
    }
    let docs = yaml_documents(&stdout);
    assert!(!docs.is_empty(), "kubectl kustomize {dir} rendered nothing");
    docs
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("?")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("?")
}

/// Runs kubernetes-validate --strict on each of `docs` (one file each): Ok
/// with its output when every one passed (CRD kinds: had no schema, or
/// passed), else Err with the output.
fn validate(docs: &[Value]) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let file = dir
            .path()
            .join(format!("{i:02}-{}-{}.json", kind(doc), name(doc)));
        std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        files.push(file);
    }
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    let (stdout, stderr) = output_text(&out);
    let text = format!("{stdout}{stderr}");
    if !out.status.success() {
        return Err(text);
    }
    for (doc, file) in docs.iter().zip(&files) {
        let file = file.display().to_string();
        let said = |what: &str| text.lines().any(|l| l.contains(&format!("{file} {what}")));
        let ok = said("passed") || (CRD_KINDS.contains(&kind(doc)) && said("Couldn't find schema"));
        if !ok {
            return Err(format!(
                "{} {} did not pass (no schema for a kind that is not a known CRD?):\n{text}",
                kind(doc),
                name(doc)
            ));
        }
    }
    Ok(text)
}

/// The only resource of one of `kinds`.
fn only<'a>(docs: &'a [Value], kinds: &[&str]) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kinds.contains(&kind(d))).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one of {kinds:?}, found {}",
        found.len()
    );
    found[0]
}

fn all<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// Whether every label of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[test]
fn every_kustomization_is_listed() {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let rel = path.parent().unwrap().strip_prefix(repo("")).unwrap();
                out.insert(rel.to_str().unwrap().to_owned());
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(&repo("contrib/kubernetes"), &mut found);
    let listed: BTreeSet<String> = KUSTOMIZATIONS.iter().map(|e| e.dir.to_owned()).collect();
    assert_eq!(
        found, listed,
        "tests/kubernetes.rs KUSTOMIZATIONS is out of date"
    );
}

#[test]
fn every_kustomization_renders_and_validates_against_the_schemas() {
    for e in KUSTOMIZATIONS {
        let docs = render(e.dir);
        let out = validate(&docs).unwrap_or_else(|text| {
            panic!(
                "{}: kubernetes-validate {KUBERNETES_VERSION}:\n{text}",
                e.dir
            )
        });
        println!("{}:\n{out}", e.dir);
        let kinds: BTreeSet<&str> = docs.iter().map(kind).collect();
        for k in ["DaemonSet", "ConfigMap", "ServiceAccount"] {
            assert!(kinds.contains(k), "{}: no {k} among {kinds:?}", e.dir);
        }
        if let Some(ns) = e.namespace {
            for d in &docs {
                assert_eq!(d["metadata"]["namespace"], ns, "{}: {}", e.dir, name(d));
            }
        }
    }
}

#[test]
fn validation_rejects_broken_manifests() {
    let docs = render(KUSTOMIZATIONS[0].dir);
    let ds = only(&docs, &["DaemonSet"]).clone();

    // An unknown field (a typo of terminationGracePeriodSeconds): --strict.
    let mut typo = ds.clone();
    typo["spec"]["template"]["spec"]["terminationGracePeriod"] = json!(30);
    let err = validate(&[typo]).expect_err("an unknown field must be rejected");
    assert!(err.contains("terminationGracePeriod"), "{err}");

    // A field of the wrong type.
    let mut wrong = ds.clone();
    wrong["spec"]["template"]["spec"]["hostNetwork"] = json!("yes");
    let err = validate(&[wrong]).expect_err("a string for a boolean must be rejected");
    assert!(err.contains("hostNetwork"), "{err}");

    // A kind nobody knows is not let through as if it were a CRD.
    let mut unknown = ds;
    unknown["kind"] = json!("DaemonSett");
    validate(&[unknown]).expect_err("an unknown kind must not pass");
}

/// The rendered configuration file of `docs`, written to `dir`, and the
/// workload's pod spec and ferroturn container.
struct Workload<'a> {
    pod: &'a Value,
    template: &'a Value,
    container: &'a Value,
    config_file: PathBuf,
    config_text: String,
}

fn workload<'a>(docs: &'a [Value], dir: &Path) -> Workload<'a> {
    let w = only(docs, &["DaemonSet", "StatefulSet", "Deployment"]);
    let template = &w["spec"]["template"];
    let pod = &template["spec"];
    let container = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ferroturn")
        .expect("a container named ferroturn");
    // The volume mounted where --config points, a ConfigMap of this rendering.
    let config_dir = Path::new(CONFIG_PATH).parent().unwrap().to_str().unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == config_dir)
        .unwrap_or_else(|| panic!("nothing mounted at {config_dir}"));
    assert_eq!(
        mount["readOnly"], true,
        "the configuration is mounted read-only"
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let cm_name = volume["configMap"]["name"]
        .as_str()
        .expect("the configuration volume is a ConfigMap");
    let cm = all(docs, "ConfigMap")
        .into_iter()
        .find(|c| name(c) == cm_name)
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} is not in the rendering"));
    let file_name = Path::new(CONFIG_PATH)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let config_text = cm["data"][file_name]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} has no {file_name}"))
        .to_owned();
    let config_file = dir.join(file_name);
    std::fs::write(&config_file, &config_text).unwrap();
    Workload {
        pod,
        template,
        container,
        config_file,
        config_text,
    }
}

/// The value after `flag` in `args`.
fn arg_after<'a>(args: &'a [Value], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.as_str()
}

fn env_var<'a>(container: &'a Value, var: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == var)
}

/// The preStop hook's command, as one string.
fn pre_stop(container: &Value) -> String {
    container["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("a preStop exec hook")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_manifests_have_what_a_turn_server_needs() {
    for e in KUSTOMIZATIONS {
        let docs = render(e.dir);
        let dir = tempfile::tempdir().unwrap();
        let w = workload(&docs, dir.path());
        let (pod, c) = (w.pod, w.container);
        let ctx = e.dir;

        // The node's network, and cluster DNS on it.
        assert_eq!(pod["hostNetwork"], true, "{ctx}");
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet", "{ctx}");

        // The configuration: accepted by the real binary, no secret in it.
        let args = c["args"].as_array().expect("container args");
        assert_eq!(args.first().and_then(Value::as_str), Some("serve"), "{ctx}");
        assert_eq!(arg_after(args, "--config"), Some(CONFIG_PATH), "{ctx}");
        let path = w.config_file.to_str().unwrap();
        let out = ferroturn_cli(&["check", "--config", path], None).ok();
        assert!(out.stdout.contains("ok:"), "{ctx}: {}", out.stdout);
        let config = ferroturn::config::Config::load(&w.config_file)
            .unwrap_or_else(|err| panic!("{ctx}: {err}"));
        assert!(
            config.auth.secrets.is_empty(),
            "{ctx}: a secret in the ConfigMap"
        );
        assert!(
            config.auth.users.is_empty(),
            "{ctx}: a password in the ConfigMap"
        );
        assert!(
            config.store.url.is_none(),
            "{ctx}: store.url belongs in the Secret (FERROTURN_DB), it may hold a password"
        );
        for line in w.config_text.lines() {
            let line = line.trim();
            assert!(
                line.starts_with('#') || !(line.contains("://") && line.contains('@')),
                "{ctx}: a URL with credentials in the ConfigMap: {line}"
            );
        }

        // Secrets from a Secret, through the environment.
        for (var, required) in [
            ("FERROTURN_AUTH_SECRET", true),
            ("FERROTURN_DB", e.store_required),
        ] {
            let v = env_var(c, var).unwrap_or_else(|| panic!("{ctx}: no {var}"));
            assert!(v.get("value").is_none(), "{ctx}: {var} has a literal value");
            let r = &v["valueFrom"]["secretKeyRef"];
            assert!(
                r["name"].is_string() && r["key"].is_string(),
                "{ctx}: {var} is not from a Secret: {v}"
            );
            let optional = r["optional"].as_bool().unwrap_or(false);
            assert_eq!(optional, !required, "{ctx}: {var} optional");
        }

        // Metrics on the node's address, and the probes on that port.
        let host_ip = env_var(c, "HOST_IP").expect("HOST_IP");
        assert_eq!(
            host_ip["valueFrom"]["fieldRef"]["fieldPath"],
            "status.hostIP"
        );
        let metrics = arg_after(args, "--metrics").expect("--metrics");
        let port = metrics
            .strip_prefix("$(HOST_IP):")
            .unwrap_or_else(|| panic!("{ctx}: --metrics {metrics}"));
        let port: u16 = port.parse().unwrap();
        let metrics_port = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "metrics")
            .expect("a port named metrics");
        assert_eq!(metrics_port["containerPort"], port, "{ctx}");
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{ctx}: {probe}");
            assert!(
                get["port"] == "metrics" || get["port"] == port,
                "{ctx}: {probe} port {}",
                get["port"]
            );
            assert!(
                get.get("host").is_none(),
                "{ctx}: {probe} must hit the pod (node) IP"
            );
        }
        let ann = &w.template["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true", "{ctx}");
        assert_eq!(ann["prometheus.io/port"], port.to_string(), "{ctx}");
        assert_eq!(ann["prometheus.io/path"], "/metrics", "{ctx}");

        // Drain on the way out, with the configured deadline, in time.
        assert_eq!(config.drain.deadline.as_secs(), e.drain_deadline, "{ctx}");
        let hook = pre_stop(c);
        assert!(
            hook.contains(&format!("ferroturn drain --config {CONFIG_PATH}")),
            "{ctx}: preStop {hook}"
        );
        assert!(
            !hook.contains("--deadline"),
            "{ctx}: the hook must use drain.deadline, not one of its own: {hook}"
        );
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace >= e.drain_deadline + GRACE_MARGIN_SECS,
            "{ctx}: terminationGracePeriodSeconds {grace} < drain.deadline {} + {GRACE_MARGIN_SECS}",
            e.drain_deadline
        );
        // The admin socket the hook talks to: on a writable emptyDir.
        let socket = config.admin.socket.clone().expect("admin.socket set");
        assert!(hook.contains(socket.to_str().unwrap()), "{ctx}: {hook}");
        let run = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == socket.parent().unwrap())
            .unwrap_or_else(|| panic!("{ctx}: nothing mounted at {socket:?}'s directory"));
        assert_ne!(run["readOnly"], true, "{ctx}");
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == run["name"])
            .unwrap();
        assert!(volume["emptyDir"].is_object(), "{ctx}: {volume}");

        // Locked down.
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{ctx}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{ctx}");
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{ctx}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{ctx}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{ctx}");
        let low_port = config.listen.iter().any(|a| a.port() < 1024)
            || config
                .tls
                .as_ref()
                .is_some_and(|t| t.listen.iter().any(|a| a.port() < 1024));
        let added = sc["capabilities"]["add"].clone();
        if low_port {
            assert_eq!(added, json!(["NET_BIND_SERVICE"]), "{ctx}");
        } else {
            assert!(added.is_null(), "{ctx}: no capability needed: {added}");
        }

        // Resources.
        let res = &c["resources"];
        assert!(res["requests"]["cpu"].is_string(), "{ctx}: {res}");
        assert!(res["requests"]["memory"].is_string(), "{ctx}: {res}");
        assert!(res["limits"]["memory"].is_string(), "{ctx}: {res}");

        let monitors = all(&docs, "ServiceMonitor");
        assert_eq!(monitors.len(), usize::from(e.service_monitor), "{ctx}");
        for m in monitors {
            check_service_monitor(&docs, m, &w.template["metadata"]["labels"], port);
        }
    }
}

/// A ServiceMonitor (no schema to validate it against): its fields, and that
/// it reaches the pods' metrics port through a Service of the rendering.
fn check_service_monitor(docs: &[Value], m: &Value, pod_labels: &Value, port: u16) {
    assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
    assert!(m["metadata"]["name"].is_string());
    let keys: BTreeSet<&str> = m["spec"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["selector", "endpoints"]), "{m}");
    let svc = all(docs, "Service")
        .into_iter()
        .find(|s| {
            selects(
                &m["spec"]["selector"]["matchLabels"],
                &s["metadata"]["labels"],
            ) && s["metadata"]["namespace"] == m["metadata"]["namespace"]
        })
        .expect("a Service the ServiceMonitor selects");
    assert!(
        selects(&svc["spec"]["selector"], pod_labels),
        "the Service selects the ferroturn pods"
    );
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "headless: endpoints are the pods"
    );
    let endpoints = m["spec"]["endpoints"].as_array().unwrap();
    assert!(!endpoints.is_empty());
    for ep in endpoints {
        let svc_port = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == ep["port"])
            .unwrap_or_else(|| panic!("endpoint port {} is not a port of the Service", ep["port"]));
        assert!(svc_port["targetPort"] == "metrics" || svc_port["targetPort"] == port);
        assert_eq!(ep["path"], "/metrics");
        assert!(ep["interval"].as_str().is_some_and(|i| i.ends_with('s')));
    }
}

/// The base's rendered preStop hook, run by `sh` as the kubelet would, against
/// the real binary started with the rendered configuration (paths moved into
/// a scratch directory, a short deadline, a user): it drains, and it returns
/// only after the server has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_stop_hook_drains_and_waits_for_the_server_to_exit() {
    const PASSWORD: &str = "k8s-hook-test";
    const DEADLINE: u64 = 3;
    let docs = render(KUSTOMIZATIONS[0].dir);
    let dir = tempfile::tempdir().unwrap();
    let w = workload(&docs, dir.path());
    let rendered = ferroturn::config::Config::load(&w.config_file).unwrap();
    let real_socket = rendered.admin.socket.clone().unwrap();
    let socket = dir.path().join("admin.sock");
    let config = dir.path().join("test.toml");

    let mut table: toml::Table = w.config_text.parse().unwrap();
    let section = |table: &mut toml::Table, name: &str| -> toml::Table {
        table
            .remove(name)
            .and_then(|v| v.as_table().cloned())
            .unwrap_or_default()
    };
    let mut admin = section(&mut table, "admin");
    admin.insert("socket".into(), socket.to_str().unwrap().into());
    table.insert("admin".into(), admin.into());
    let mut drain = section(&mut table, "drain");
    drain.insert("deadline".into(), toml::Value::Integer(DEADLINE as i64));
    table.insert("drain".into(), drain.into());
    let mut peers = section(&mut table, "peers");
    peers.insert(
        "allow".into(),
        vec![toml::Value::from("127.0.0.0/8")].into(),
    );
    table.insert("peers".into(), peers.into());
    let mut users = toml::Table::new();
    users.insert("alice".into(), PASSWORD.into());
    let mut auth = section(&mut table, "auth");
    auth.insert("users".into(), users.into());
    table.insert("auth".into(), auth.into());
    std::fs::write(&config, table.to_string()).unwrap();

    let mut server = spawn_binary(&["--config", config.to_str().unwrap()]);
    let metrics = server.metrics.unwrap();
    wait_http_200(metrics, "/readyz", WAIT).await;
    let mut client = turn_client_as(&server, Transport::Udp, "alice", PASSWORD).await;
    client.allocate().await.unwrap();

    let hook = w.container["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace(CONFIG_PATH, config.to_str().unwrap())
                .replace(real_socket.to_str().unwrap(), socket.to_str().unwrap())
        })
        .collect::<Vec<_>>();
    assert!(
        hook.iter().any(|a| a.contains(socket.to_str().unwrap())),
        "{hook:?}"
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ferroturn")).parent().unwrap();
    let path = std::env::join_paths(
        std::iter::once(bin_dir.to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let started = Instant::now();
    let mut run = Command::new(&hook[0])
        .args(&hook[1..])
        .env("PATH", path)
        .env_remove("FERROTURN_DB")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hook's command starts");

    // Draining: not ready, the allocation still held, the hook still waiting.
    eventually_async(
        WAIT,
        "/readyz 503 while the hook runs",
        async || match http_get(metrics, "/readyz").await {
            (503, body) if body.contains("draining") => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        },
    )
    .await;
    client.refresh(600).await.unwrap();
    assert!(
        run.try_wait().unwrap().is_none(),
        "the hook returned while the server runs"
    );

    // At the deadline the server ends the allocation and exits; then the hook.
    let status = poll_until(Duration::from_secs(DEADLINE + 10), || {
        run.try_wait().unwrap().ok_or(())
    })
    .unwrap_or_else(|()| {
        let _ = run.kill();
        panic!("the hook did not return after the drain deadline")
    });
    let took = started.elapsed();
    let out = run.wait_with_output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(status.success(), "hook: {status:?}\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("draining: 1 allocation(s) left"),
        "{stdout}"
    );
    assert!(
        took >= Duration::from_secs(DEADLINE - 1),
        "the hook returned after {took:?}, before the {DEADLINE}s deadline"
    );
    let exit = server
        .wait_exit(Duration::from_secs(2))
        .expect("the server has exited when the hook returns");
    assert!(exit.success(), "{exit:?}");
}

/// `serve` reads the Secret's environment variables: a store URL from
/// FERROTURN_DB (here a bad one, so that it stops at validation and names the
/// flag the value stands for), and FERROTURN_AUTH_SECRET (an empty one).
#[test]
fn serve_takes_the_store_url_and_rest_secret_from_the_environment() {
    for (var, value, key) in [
        (
            "FERROTURN_DB",
            "mysql://turn:pw@db/turn",
            "store.url (from --db)",
        ),
        (
            "FERROTURN_AUTH_SECRET",
            "",
            "auth.secrets[0] (from --auth-secret)",
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferroturn"))
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics", "off"])
            .args(["--admin-socket", "off"])
            .env_remove("FERROTURN_DB")
            .env_remove("FERROTURN_AUTH_SECRET")
            .env(var, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = poll_until(Duration::from_secs(10), || {
            child.try_wait().unwrap().ok_or(())
        });
        let Ok(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started although {var} is invalid: not read from the environment?");
        };
        let mut stderr = String::new();
        use std::io::Read as _;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(1), "{var}: {stderr}");
        assert!(stderr.contains(key), "{var}: {stderr}");
        assert!(
            !value.contains("pw") || !stderr.contains(":pw@"),
            "{stderr}"
        );
    }
}
