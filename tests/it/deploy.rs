//! What CI can check of the deployment files without a container engine: they parse,
//! every variable they set is one rosbackup reads (or the database image's own), every
//! long-running service has a health check, workers can scale, images run as non-root.
//! `docker compose config` runs too where the compose plugin exists. The compose file and the
//! Kubernetes manifests are also validated against their published schemas by real validators
//! from PyPI (`check-jsonschema` with its vendored compose-spec, `kubernetes-validate` with its
//! bundled Kubernetes schemas), which `.ci/run` installs (`DEPLOY_VALIDATORS`).

use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let mut v = Value::deserialize(d)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            v.apply_merge().expect("merge keys");
            // Nested merges (an anchor that itself merges) need a second pass.
            v.apply_merge().expect("merge keys");
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn known_vars() -> BTreeSet<&'static str> {
    rosbackup::config::VARS.iter().map(|v| v.name).collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

#[test]
fn compose_services_are_healthy_scalable_and_configured_with_known_variables() {
    let docs = yaml_docs(&root().join("docker-compose.yml"));
    assert_eq!(docs.len(), 1);
    let services = docs[0]["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().map(str_of).collect();
    for want in [
        "postgres",
        "redis",
        "nats",
        "migrate",
        "enqueuer",
        "worker",
        "sim",
        "demo-import",
    ] {
        assert!(names.contains(want), "service {want} missing");
    }
    let known = known_vars();
    for (name, svc) in services {
        let name = str_of(name);
        let one_shot = str_of(&svc["restart"]) == "no";
        if !one_shot {
            let hc = &svc["healthcheck"];
            assert!(
                hc["test"].is_sequence() && hc["disable"].as_bool() != Some(true),
                "long-running service {name} has no health check"
            );
        }
        if let Some(env) = svc["environment"].as_mapping()
            && !["postgres"].contains(&name)
        {
            for k in env.keys() {
                assert!(
                    known.contains(str_of(k)),
                    "{name} sets unknown variable {}",
                    str_of(k)
                );
            }
        }
    }
    assert!(
        services["worker"]["ports"].is_null(),
        "worker must not bind host ports (scaling)"
    );
    assert!(services["enqueuer"]["ports"].is_sequence());
    for demo in ["sim", "demo-import"] {
        assert_eq!(
            services[demo]["profiles"][0], "demo",
            "{demo} belongs to the demo profile"
        );
    }
    // Secrets are required from the environment, never written in the file.
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    assert!(text.contains("${CREDENTIAL_ENCRYPTION_KEY:?"));
    assert!(text.contains("${POSTGRES_PASSWORD:?"));
    let example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    assert!(example.contains("CREDENTIAL_ENCRYPTION_KEY="));

    // The compose plugin, where installed, agrees that the file is valid.
    let has_compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if has_compose {
        let out = Command::new("docker")
            .args(["compose", "-f"])
            .arg(root().join("docker-compose.yml"))
            .args(["--profile", "demo", "config", "--quiet"])
            .env("POSTGRES_PASSWORD", "x")
            .env("CREDENTIAL_ENCRYPTION_KEY", "x")
            .output()
            .expect("docker compose config");
        assert!(
            out.status.success(),
            "docker compose config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else if crate::common::in_ci() {
        eprintln!(
            "NOTE: docker compose plugin not installed: `docker compose config` not run \
             (the compose-spec schema check in deployment_files_pass_their_published_schemas stands in)"
        );
    } else {
        eprintln!("docker compose plugin not installed: checked the YAML ourselves only");
    }
}

/// A validator from `target/deploy-venv` (or `$DEPLOY_VALIDATORS/<name>`); `None` outside CI
/// when it is not installed, a failure in CI.
fn validator(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DEPLOY_VALIDATORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/deploy-venv/bin"));
    let path = dir.join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !crate::common::in_ci(),
        "{name} is not installed: .ci/run installs it (DEPLOY_VALIDATORS), or target/deploy-venv"
    );
    eprintln!("skipped: {name} not installed (run .ci/run, or set DEPLOY_VALIDATORS)");
    None
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The deployment files against their published schemas. Each validator is first shown a
/// copy with one wrong field and must reject it, so a validator that accepts anything (or
/// checks nothing) fails this test instead of passing it.
#[test]
fn deployment_files_pass_their_published_schemas() {
    let (Some(compose_check), Some(kube_check)) = (
        validator("check-jsonschema"),
        validator("kubernetes-validate"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let compose = |path: &Path| {
        run(Command::new(&compose_check)
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(path))
    };
    let kube = |paths: &[PathBuf]| run(Command::new(&kube_check).args(["--strict"]).args(paths));

    // Compose: a health check given as a string is not the spec's object.
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let bad = tmp.path().join("bad-compose.yml");
    std::fs::write(
        &bad,
        text.replacen(
            "services:\n",
            "services:\n  broken:\n    image: x\n    healthcheck: \"yes\"\n",
            1,
        ),
    )
    .unwrap();
    let (ok, out) = compose(&bad);
    assert!(!ok && out.contains("healthcheck"), "not rejected: {out}");
    let (ok, out) = compose(&root().join("docker-compose.yml"));
    assert!(ok, "docker-compose.yml against the compose-spec: {out}");

    // Kubernetes: an unknown field under a Deployment's spec (strict mode).
    let dir = root().join("deploy/kubernetes");
    let worker = std::fs::read_to_string(dir.join("worker.yaml")).unwrap();
    let bad = tmp.path().join("bad-worker.yaml");
    std::fs::write(
        &bad,
        worker.replacen("\nspec:\n", "\nspec:\n  replicaz: 3\n", 1),
    )
    .unwrap();
    let (ok, out) = kube(std::slice::from_ref(&bad));
    assert!(!ok && out.contains("replicaz"), "not rejected: {out}");

    let manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    let (ok, out) = kube(&manifests);
    assert!(ok, "manifests against the Kubernetes schemas: {out}");
    // Every built-in kind was really validated; the two custom resources have no schema
    // offline and are checked by kubernetes_manifests_parse_and_run_safely.
    for kind in [
        "deployment/rosbackup-worker",
        "job/rosbackup-migrate",
        "secret/rosbackup",
    ] {
        assert!(
            out.contains(&format!("passed for resource {kind}")),
            "{out}"
        );
    }
    for unchecked in ["Kustomization", "ScaledObject"] {
        if out.contains(&format!("Couldn't find schema for kind {unchecked}")) {
            eprintln!("NOTE: {unchecked}: no published schema offline; checked by our own test");
        }
    }
}

#[test]
fn kubernetes_manifests_parse_and_run_safely() {
    let dir = root().join("deploy/kubernetes");
    let kustomization = &yaml_docs(&dir.join("kustomization.yaml"))[0];
    let known = known_vars();
    let mut kinds = BTreeSet::new();
    for res in kustomization["resources"].as_sequence().expect("resources") {
        let file = str_of(res);
        // secret.yaml is the operator's filled-in copy of secret.example.yaml.
        let path = if file == "secret.yaml" {
            dir.join("secret.example.yaml")
        } else {
            dir.join(file)
        };
        for doc in yaml_docs(&path) {
            let kind = str_of(&doc["kind"]).to_string();
            assert!(!kind.is_empty(), "{file}: a document without kind");
            assert!(doc["apiVersion"].is_string(), "{file}: no apiVersion");
            match kind.as_str() {
                "ConfigMap" | "Secret" => {
                    let data = if kind == "Secret" {
                        &doc["stringData"]
                    } else {
                        &doc["data"]
                    };
                    for k in data.as_mapping().expect("data").keys() {
                        assert!(
                            known.contains(str_of(k)),
                            "{file}: unknown variable {}",
                            str_of(k)
                        );
                    }
                }
                "Deployment" | "Job" => {
                    let spec = &doc["spec"]["template"]["spec"];
                    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{file}");
                    for c in spec["containers"].as_sequence().expect("containers") {
                        for e in c["env"].as_sequence().map(|s| s.as_slice()).unwrap_or(&[]) {
                            let n = str_of(&e["name"]);
                            assert!(known.contains(n), "{file}: unknown variable {n}");
                        }
                        if kind == "Deployment" {
                            assert!(
                                c["livenessProbe"]["httpGet"]["path"] == "/healthz",
                                "{file}"
                            );
                            assert!(
                                c["readinessProbe"]["httpGet"]["path"] == "/readyz",
                                "{file}"
                            );
                        }
                    }
                    if str_of(&doc["metadata"]["name"]) == "rosbackup-enqueuer" {
                        assert_eq!(doc["spec"]["replicas"], 2, "the enqueuer runs twice");
                    }
                }
                _ => {}
            }
            kinds.insert(kind);
        }
    }
    for want in [
        "Namespace",
        "ConfigMap",
        "Secret",
        "Job",
        "Deployment",
        "Service",
        "ScaledObject",
    ] {
        assert!(kinds.contains(want), "no {want} in the manifests");
    }
}

#[test]
fn the_image_runs_as_a_non_root_user() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let last_stage = text.rsplit("\nFROM ").next().unwrap();
    let user = last_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the final stage");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "USER {user}"
    );
    assert!(
        text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")) >= 2,
        "multi-stage"
    );
}

/// `rosbackup probe` answers container health checks without curl.
#[tokio::test]
async fn probe_exits_by_the_status_code() {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/bad",
            get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "no") }),
        );
    let (addr, _server) = rosbackup::http::serve("127.0.0.1:0", app, std::future::pending())
        .await
        .unwrap();
    let probe = |path: &str| {
        let url = format!("http://{addr}{path}");
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
                .args(["probe", &url])
                .output()
                .await
                .unwrap()
                .status
                .code()
        }
    };
    assert_eq!(probe("/ok").await, Some(0));
    assert_eq!(probe("/bad").await, Some(1));
    assert_eq!(probe("/missing").await, Some(1));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
        .args(["probe", "http://127.0.0.1:1/healthz"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn a_containerised_simulator_writes_its_service_name_into_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.csv");
    let sim = rosbackup::sim::Simulator::start(rosbackup::sim::SimConfig {
        devices: 3,
        listen_base: std::net::Ipv4Addr::new(127, 0, 0, 1),
        one_address: true,
        port: 0,
        inventory: Some(inv.clone()),
        inventory_host: Some("sim".into()),
        inventory_interval: Some(60),
        ..Default::default()
    })
    .await
    .expect("simulator");
    let devices = rosbackup::inventory::parse_inventory(&std::fs::read(&inv).unwrap()).unwrap();
    assert_eq!(devices.len(), 3);
    for (d, s) in devices.iter().zip(sim.devices()) {
        assert_eq!(d.host, "sim");
        assert_eq!(d.ssh_port, s.port);
        // The compose demo's short interval, so its changing devices show diffs soon.
        assert_eq!(d.backup_interval_seconds, Some(60));
    }
    sim.shutdown().await;
}
