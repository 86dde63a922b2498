//! proxy.toml validation: every problem named with its key and line, and `check-config`.

use idoctor_gate::config::Config;
use idoctor_gate::proxy::routes::RouteTable;
use std::process::Command;

fn problems(text: &str) -> String {
    match Config::from_toml_str_isolated(text, "t.toml") {
        Err(e) => e.to_string(),
        Ok(c) => match RouteTable::build(&c) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        },
    }
}

#[test]
fn the_shipped_file_is_valid_and_reproduces_the_backend_route_map() {
    let config =
        Config::from_toml_str_isolated(&crate::common::shipped_config(), "proxy.toml").unwrap();
    let table = RouteTable::build(&config).unwrap();
    let get = |path: &str| {
        table
            .routes()
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("{path} is in proxy.toml"))
            .clone()
    };
    use idoctor_gate::config::{Access, Cost, JsonPredicate};
    // Every caller gets its own tasks only (`tenancy`).
    let list_tasks = get("/list_tasks");
    assert_eq!(list_tasks.access, Access::User);
    let owned = list_tasks
        .tenancy
        .as_ref()
        .unwrap()
        .owned_list
        .as_ref()
        .unwrap();
    assert_eq!(
        (owned.kind.as_str(), owned.field.as_str()),
        ("task", "tasks")
    );
    let owner_only_kind = |path: &str| {
        let route = get(path);
        let owner_only = route.tenancy.as_ref().unwrap().owner_only.as_ref().unwrap();
        owner_only.kind.clone()
    };
    assert_eq!(owner_only_kind("/task_status/{task_id}"), "task");
    assert_eq!(owner_only_kind("/upload_status/{upload_id}"), "upload");
    for creator in [
        "/process/{patient_name}/{study_date}",
        "/continue_after_l3/{patient_name}/{study_date}",
        "/upload_dicom_zip",
    ] {
        assert!(
            get(creator).tenancy.as_ref().unwrap().creates.is_some(),
            "{creator}"
        );
    }
    assert!(get("/upload_dicom_zip").tenancy.as_ref().unwrap().multipart);
    assert_eq!(get("/admin/{*rest}").access, Access::Blocked);
    let process = get("/process/{patient_name}/{study_date}");
    let meter = process.meter.as_ref().unwrap();
    assert_eq!(
        (meter.quota.as_str(), meter.cost),
        ("api_calls_full_process", Cost::Fixed(1))
    );
    assert_eq!(
        meter.settle.json,
        Some(JsonPredicate::Equals {
            field: "status".into(),
            value: "submitted".into()
        })
    );
    assert_eq!(process.timeout.as_secs(), 600);
    let l3 = get("/l3_detect/{patient_name}/{study_date}");
    assert_eq!(
        l3.meter.as_ref().unwrap().settle.json,
        Some(JsonPredicate::Absent {
            field: "error".into()
        })
    );
    let mask = get("/upload_l3_mask/{patient_name}/{study_date}");
    assert_eq!(mask.meter.as_ref().unwrap().cost, Cost::PerMb(1));
    let upload = get("/upload_dicom_zip");
    assert_eq!(
        (upload.timeout.as_secs(), upload.max_body),
        (600, 500 << 20)
    );
    assert!(get("/get_image/{patient_name}/{study_date}/{filename}").query_token);
    assert!(get("/get_output_image/{patient_name}/{study_date}/{folder}/{filename}").query_token);
    assert_eq!(get("/task_status/{task_id}").access, Access::User);
    assert_eq!(config.max_body, 500 << 20);
    assert_eq!(config.listen.port(), 9000);
    assert_eq!(config.upstream.url, "http://127.0.0.1:4200");
    assert!(
        config.upstream.pool_idle_timeout.as_secs() < 5,
        "below uvicorn's keep-alive"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let p = problems("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n");
    assert!(p.contains("line 3") && p.contains("listen_port"), "{p}");
    let p = problems("[[route]]\npath = \"/a\"\naccess = \"user\"\nquery_tokens = true\n");
    assert!(p.contains("line 4") && p.contains("query_tokens"), "{p}");
    let p = problems("[[route]]\npath = \"/a\"\naccess = \"everyone\"\n");
    assert!(p.contains("line 3") && p.contains("everyone"), "{p}");
}

#[test]
fn impossible_values_are_refused_with_key_and_line() {
    let cases: &[(&str, &[&str])] = &[
        ("[server]\ntimeout_secs = 0\n", &["server.timeout_secs"]),
        (
            "[server]\nworkers = 5000\n",
            &["server.workers", "at most 1024"],
        ),
        ("[server]\nworkers = -1\n", &["workers"]),
        ("[server]\nmax_body = \"12 parsecs\"\n", &["parsecs"]),
        (
            "[upstream]\nurl = \"https://x\"\n",
            &["upstream.url", "http://"],
        ),
        (
            "[upstream]\nurl = \"http://x/api\"\n",
            &["upstream.url", "path"],
        ),
        ("[database]\nurl = \"mysql://x\"\n", &["database.url"]),
        ("[cors]\nallow_origins = [\"*\"]\n", &["cors.allow_origins"]),
        (
            "\n\n[[route]]\npath = \"a\"\naccess = \"user\"\n",
            &["t.toml:3", "route.path"],
        ),
        (
            "\n[[route]]\npath = \"/a\"\nmethods = [\"GTE\"]\naccess = \"user\"\n",
            &["t.toml:2", "`GTE` is not an HTTP method"],
        ),
        (
            "[[route]]\npath = \"/x\"\naccess = \"user\"\n\n[[route]]\npath = \"/auth/{*rest}\"\naccess = \"user\"\n",
            &["t.toml:5", "gate's own endpoints"],
        ),
        (
            "[[route]]\npath = \"/a/../b\"\naccess = \"user\"\n",
            &["t.toml:1", "`..`"],
        ),
        (
            "[[route]]\npath = \"/a\"\nmethods = [\"get\"]\naccess = \"user\"\n",
            &["route.methods"],
        ),
        (
            "[[route]]\npath = \"/a\"\naccess = \"user\"\ntimeout_secs = 0\n",
            &["route.timeout_secs"],
        ),
        (
            "[[route]]\npath = \"/a\"\naccess = \"public\"\n[route.meter]\nquota = \"q\"\ncost = 1\n",
            &[
                "t.toml:1",
                "public route cannot be metered",
                "not a declared",
            ],
        ),
        (
            "[[quota_type]]\nkey = \"q\"\nname = \"Q\"\nunit = \"x\"\n[[route]]\npath = \"/a\"\naccess = \"user\"\n[route.meter]\nquota = \"q\"\ncost = 1\ncost_per_mb = 2\n",
            &["t.toml:5", "not both"],
        ),
        (
            "[[quota_type]]\nkey = \"q\"\nname = \"Q\"\nunit = \"x\"\n[[route]]\npath = \"/a\"\naccess = \"user\"\n[route.meter]\nquota = \"q\"\ncost = 0\n",
            &["route.meter.cost"],
        ),
        (
            "[[quota_type]]\nkey = \"q\"\nname = \"Q\"\nunit = \"x\"\n[[route]]\npath = \"/a\"\naccess = \"user\"\n[route.meter]\nquota = \"q\"\ncost = 1\n[route.meter.settle]\nstatus = [\"2yy\"]\njson_field = \"status\"\n",
            &["2yy", "json_field needs"],
        ),
        (
            "[[route]]\npath = \"/a\"\naccess = \"blocked\"\nquery_token = true\n",
            &["blocked"],
        ),
    ];
    for (text, needles) in cases {
        let p = problems(text);
        for n in *needles {
            assert!(p.contains(n), "{text:?}: expected {n:?} in:\n{p}");
        }
    }
}

#[test]
fn ambiguous_templates_are_refused_with_both_lines() {
    let p = problems(
        "[[route]]\npath = \"/a/{x}\"\naccess = \"user\"\n\n[[route]]\npath = \"/a/{y}\"\naccess = \"user\"\n",
    );
    assert!(
        p.contains("/a/{y}") && p.contains("/a/{x}") && p.contains("line 1"),
        "{p}"
    );
    let p = problems(
        "[[route]]\npath = \"/a\"\naccess = \"user\"\n\n[[route]]\npath = \"/a\"\nmethods = [\"GET\"]\naccess = \"public\"\n",
    );
    assert!(p.contains("t.toml:5") && p.contains("line 1"), "{p}");
    // Same template, disjoint methods: fine. Static beside a parameter: fine (static wins).
    let ok = problems(
        "[[route]]\npath = \"/a\"\nmethods = [\"POST\"]\naccess = \"user\"\n[[route]]\npath = \"/a\"\nmethods = [\"GET\"]\naccess = \"public\"\n[[route]]\npath = \"/b/{x}\"\naccess = \"user\"\n[[route]]\npath = \"/b/me\"\naccess = \"public\"\n",
    );
    assert_eq!(ok, "");
}

fn gate_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idoctor-gate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GATE_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn check_config_prints_the_route_table_or_the_problems() {
    let out = gate_bin()
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("/process/{patient_name}/{study_date}"));
    assert!(stdout.contains("api_calls_full_process x1"));
    assert!(stdout.contains("blocked"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\ntimeout_secs = 0\n[[route]]\npath = \"/x\"\naccess = \"public\"\nmetre = 1\n",
    )
    .unwrap();
    let out = gate_bin()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metre") && stderr.contains("line 6"),
        "{stderr}"
    );
}

/// `check-config` of the shipped file with one variable set: it must refuse; what it printed.
fn refused_with_env(name: &str, value: &str) -> String {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let out = gate_bin()
        .args(["check-config", "--config", shipped])
        .env(name, value)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{name}={value} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_environment_overrides_the_file() {
    let stderr = refused_with_env("GATE_DATABASE_URL", "mysql://root:hunter2@db/x");
    assert!(stderr.contains("database.url"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "a database password is never printed"
    );
    assert!(refused_with_env("GATE_LISTEN", "not-an-address").contains("GATE_LISTEN"));
    assert!(refused_with_env("GATE_WORKERS", "two").contains("GATE_WORKERS"));
}

#[test]
fn workers_default_to_one_per_core_and_follow_the_environment() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let config = Config::from_toml_str_isolated("", "t.toml").unwrap();
    assert_eq!(config.workers, cores);
    let config = Config::from_toml_str_isolated("[server]\nworkers = 3\n", "t.toml").unwrap();
    assert_eq!(config.workers, 3);
    let config = Config::from_toml_str_with_env(
        "[server]\nworkers = 3\n",
        "t.toml",
        &[("GATE_WORKERS", "1")],
    )
    .unwrap();
    assert_eq!(config.workers, 1);
}

#[test]
fn tenancy_keys_are_checked_against_the_route_and_the_kinds() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[route]]\npath = \"/t/{id}\"\naccess = \"user\"\nowner_only = { kind = \"job\", param = \"id\" }\n",
            &["t.toml:1", "route.owner_only.kind", "`job`"],
        ),
        (
            "[[route]]\npath = \"/t/{id}\"\naccess = \"user\"\nowner_only = { kind = \"task\", param = \"task_id\" }\n",
            &["route.owner_only.param", "`{task_id}` is not a parameter"],
        ),
        (
            "\n[[route]]\npath = \"/p\"\naccess = \"public\"\ncreates = { kind = \"task\", field = \"task_id\" }\n",
            &["t.toml:2", "route.access", "public route"],
        ),
        (
            "[[route]]\npath = \"/x/{patient_name}\"\naccess = \"public\"\n",
            &["route.access", "public route"],
        ),
        (
            "[tenancy.id_prefixes]\ntask = [\"main/\"]\n",
            &["tenancy.id_prefixes.task", "`main/`"],
        ),
        (
            "[tenancy.id_prefixes]\ntask = []\n",
            &["tenancy.id_prefixes.task"],
        ),
    ];
    for (text, wants) in cases {
        let p = problems(text);
        for want in *wants {
            assert!(p.contains(want), "{text:?}: {p:?} should mention {want:?}");
        }
    }
    // A public route may still carry safe-name parameters, and a blocked one anything.
    assert_eq!(
        problems("[[route]]\npath = \"/i/{filename}\"\naccess = \"public\"\n"),
        ""
    );
    assert_eq!(
        problems("[[route]]\npath = \"/x/{patient_name}\"\naccess = \"blocked\"\n"),
        ""
    );
}
