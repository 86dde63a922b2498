//! Tenant isolation: no account can see, block or write into another account's patients.
//! Every test runs the shipped `proxy.toml` in front of a stand-in backend that keys tasks,
//! uploads and locks globally the way the real one does (`common::idoctor`), on SQLite and on
//! PostgreSQL, with the backend's own auth off and on.

use crate::common::idoctor::IDoctor;
use crate::common::{Account, Db, Options, TestApp, raw_exchange, spawn_app_with};

pub(crate) const BACKEND_SECRET: &str = "backend-secret-backend-secret-0123456789";
const ZHANG: &str = "张三";
pub(crate) const DAY: &str = "20250101";

/// The shipped configuration in front of `backend`; with `backend_auth`, the gate mints the
/// backend's own JWTs (the backend runs with `ENABLE_AUTH=true`).
async fn gate(
    db: Db,
    backend: &IDoctor,
    backend_auth: bool,
    database_url: Option<String>,
) -> TestApp {
    spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        upstream_url: Some(backend.url()),
        database_url,
        // One signing secret for every gate of a test, as replicas share one.
        env: [(
            "GATE_JWT_SECRET",
            "tenancy-test-secret-tenancy-test-secret-01",
        )]
        .into_iter()
        .chain(backend_auth.then_some(("GATE_BACKEND_JWT_SECRET", BACKEND_SECRET)))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Options::default()
    })
    .await
}

pub(crate) async fn backend(auth: bool) -> IDoctor {
    IDoctor::start(auth.then_some(BACKEND_SECRET)).await
}

/// A `multipart/form-data` body as browsers send it: the fields, then the file.
pub(crate) fn form(fields: &[(&str, &str)], file_name: &str) -> (String, Vec<u8>) {
    let boundary = "----gate-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/zip\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 1, 2, 3, 4]);
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file_size\"\r\n\r\n8\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub(crate) async fn upload(
    app: &TestApp,
    a: &Account,
    patient: &str,
    date: &str,
    file_name: &str,
) -> reqwest::Response {
    let (content_type, body) = form(
        &[("patient_name", patient), ("study_date", date)],
        file_name,
    );
    app.as_user(a)
        .post("/upload_dicom_zip")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Uploads and starts processing a case; returns the task id the client was given.
pub(crate) async fn start_case(app: &TestApp, a: &Account, patient: &str) -> String {
    let resp = upload(app, a, patient, DAY, "series.zip").await;
    assert_eq!(resp.status(), 200);
    let up: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(up["status"], "ok", "{up}");
    let enc = urlencode(patient);
    let submitted = app
        .as_user(a)
        .post_json(&format!("/process/{enc}/{DAY}"), 200)
        .await;
    assert_eq!(submitted["status"], "submitted", "{submitted}");
    submitted["task_id"].as_str().unwrap().to_string()
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The namespace the gate gives an account in the backend's names.
pub(crate) fn ns(a: &Account) -> String {
    format!("{}~", a.id)
}

async fn same_name_and_date_never_meet(db: Db, backend_auth: bool) {
    let backend = backend(backend_auth).await;
    let app = gate(db, &backend, backend_auth, None).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);

    // Both clinics upload and process a patient of the same name on the same day: neither is
    // blocked by the other's lock or told the other's task is running.
    let a_task = start_case(&app, &alice, ZHANG).await;
    let b_task = start_case(&app, &bob, ZHANG).await;
    // Each is shown the name it typed.
    assert_eq!(a_task, format!("main_{ZHANG}_{DAY}"));
    assert_eq!(b_task, a_task);
    // The backend holds two cases.
    let mut ids = backend.task_ids();
    ids.sort();
    let mut want = vec![
        format!("main_{}{ZHANG}_{DAY}", ns(&alice)),
        format!("main_{}{ZHANG}_{DAY}", ns(&bob)),
    ];
    want.sort();
    assert_eq!(ids, want);

    // Each sees its own task, results and patients, with its own names.
    backend.finish(&format!("main_{}{ZHANG}_{DAY}", ns(&alice)), "failed");
    let a_status = app
        .as_user(&alice)
        .get_json(&format!("/task_status/{}", urlencode(&a_task)), 200)
        .await;
    let b_status = app
        .as_user(&bob)
        .get_json(&format!("/task_status/{}", urlencode(&b_task)), 200)
        .await;
    assert_eq!(a_status["status"], "failed");
    assert_eq!(b_status["status"], "processing");
    let shown = a_status["output_dir"].as_str().unwrap();
    assert!(
        shown.ends_with(&format!("{ZHANG}_{DAY}/output")) && !shown.contains('~'),
        "{shown}"
    );
    for a in [&alice, &bob] {
        let patients = app.as_user(a).get_json("/list_patients", 200).await;
        assert_eq!(
            patients,
            serde_json::json!({"count": 1, "patients": [format!("{ZHANG}-{DAY}")]})
        );
        let results = app
            .as_user(a)
            .get_json(&format!("/get_key_results/{}/{DAY}", urlencode(ZHANG)), 200)
            .await;
        assert_eq!(
            results["csv_files"]["hu_statistics.csv"],
            format!("patient,{ZHANG}\n")
        );
    }
    // Two folders on the backend's disk, one per account.
    let inputs: Vec<String> = backend
        .files()
        .into_iter()
        .filter(|f| f.ends_with("series.zip"))
        .collect();
    assert_eq!(inputs.len(), 2, "{inputs:?}");
}

async fn same_name_and_date_never_meet_without_backend_auth(db: Db) {
    same_name_and_date_never_meet(db, false).await
}

async fn same_name_and_date_never_meet_with_backend_auth(db: Db) {
    same_name_and_date_never_meet(db, true).await
}

async fn another_accounts_ids_answer_404(db: Db) {
    let backend = backend(false).await;
    let app = gate(db, &backend, false, None).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let task = start_case(&app, &alice, ZHANG).await;
    let backend_id = format!("main_{}{ZHANG}_{DAY}", ns(&alice));

    let mine = app
        .as_user(&alice)
        .get_json(&format!("/task_status/{}", urlencode(&task)), 200)
        .await;
    assert_eq!(mine["status"], "processing");
    // Bob asks for the same name, and for Alice's id as the backend spells it: both 404 with a
    // detail that does not say whether the task exists.
    for id in [&task, &backend_id] {
        let theirs = app
            .as_user(&bob)
            .get_json(&format!("/task_status/{}", urlencode(id)), 404)
            .await;
        assert_eq!(theirs["detail"], "no such task among this account's");
    }
    // An id never handed out gets the same answer.
    let never = app
        .as_user(&bob)
        .get_json("/task_status/main_nobody_19990101", 404)
        .await;
    assert_eq!(never["detail"], "no such task among this account's");
    // Uploads likewise.
    let up: serde_json::Value = upload(&app, &alice, "李四", DAY, "s.zip")
        .await
        .json()
        .await
        .unwrap();
    let upload_id = up["upload_id"].as_str().unwrap();
    assert!(
        upload_id.starts_with(&format!("李四_{DAY}_")),
        "{upload_id}"
    );
    let status = app
        .as_user(&alice)
        .get_json(&format!("/upload_status/{}", urlencode(upload_id)), 200)
        .await;
    assert_eq!(status["status"], "done");
    assert_eq!(status["folder"], format!("李四_{DAY}"));
    app.as_user(&bob)
        .get_json(&format!("/upload_status/{}", urlencode(upload_id)), 404)
        .await;
    // A superuser passes, with the backend's own names.
    let admin = app.admin_bearer().await;
    let seen = app
        .with_authorization(&admin)
        .get_json(&format!("/task_status/{}", urlencode(&backend_id)), 200)
        .await;
    assert_eq!(seen["status"], "processing");
}

async fn ownership_survives_a_restart_and_reaches_every_replica(db: Db) {
    let backend = backend(false).await;
    let mut first = gate(db, &backend, false, None).await;
    let (alice, bob) = (first.signup("alice").await, first.signup("bob").await);
    let task = start_case(&first, &alice, ZHANG).await;
    let url = first.services().config().database.url.clone();
    // Another replica on the same database knows the owner.
    let mut replica = gate(db, &backend, false, Some(url.clone())).await;
    replica
        .as_user(&alice)
        .get_json(&format!("/task_status/{}", urlencode(&task)), 200)
        .await;
    replica
        .as_user(&bob)
        .get_json(&format!("/task_status/{}", urlencode(&task)), 404)
        .await;
    // And so does a gate started after both stopped (the first one's folder, which holds the
    // SQLite file, is kept).
    for running in [first.running.take(), replica.running.take()]
        .into_iter()
        .flatten()
    {
        running.shutdown();
        running.stopped().await;
    }
    let restarted = gate(db, &backend, false, Some(url)).await;
    restarted
        .as_user(&alice)
        .get_json(&format!("/task_status/{}", urlencode(&task)), 200)
        .await;
    restarted
        .as_user(&bob)
        .get_json(&format!("/task_status/{}", urlencode(&task)), 404)
        .await;
}

async fn list_tasks_answers_each_caller_with_their_own(db: Db) {
    let backend = backend(false).await;
    let app = gate(db, &backend, false, None).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    start_case(&app, &alice, ZHANG).await;
    start_case(&app, &bob, ZHANG).await;
    start_case(&app, &bob, "王五").await;

    let a = app.as_user(&alice).get_json("/list_tasks", 200).await;
    assert_eq!(a["count"], 1);
    let keys: Vec<&String> = a["tasks"].as_object().unwrap().keys().collect();
    assert_eq!(keys, [&format!("main_{ZHANG}_{DAY}")]);
    assert!(
        !a.to_string().contains(&ns(&bob)) && !a.to_string().contains('~'),
        "{a}"
    );
    let b = app.as_user(&bob).get_json("/list_tasks", 200).await;
    assert_eq!(b["count"], 2);
    assert_eq!(b["tasks"].as_object().unwrap().len(), 2);
    // A superuser sees every task, as the backend lists them.
    let admin = app.admin_bearer().await;
    let all = app
        .with_authorization(&admin)
        .get_json("/list_tasks", 200)
        .await;
    assert_eq!(all["count"], 3);
}

async fn upload_names_are_single_safe_segments(db: Db) {
    let backend = backend(true).await;
    let app = gate(db, &backend, true, None).await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    start_case(&app, &bob, ZHANG).await;
    let before = backend.files();
    let used_before = storage_used(&app, &alice).await;

    let traversal = format!("../{}/{ZHANG}", bob.id);
    let cases: &[(&str, &str, &str, &str)] = &[
        (&traversal, DAY, "s.zip", "patient_name"),
        ("..", DAY, "s.zip", "patient_name"),
        (".", DAY, "s.zip", "patient_name"),
        ("a\\b", DAY, "s.zip", "patient_name"),
        ("a\u{1}b", DAY, "s.zip", "patient_name"),
        ("", DAY, "s.zip", "patient_name"),
        (ZHANG, "../2025", "s.zip", "study_date"),
        (ZHANG, "..", "s.zip", "study_date"),
        (ZHANG, DAY, "../../evil.zip", "file name"),
        (ZHANG, DAY, "..", "file name"),
    ];
    for (patient, date, file, field) in cases {
        let resp = upload(&app, &alice, patient, date, file).await;
        assert_eq!(resp.status(), 400, "{patient:?} {date:?} {file:?}");
        let detail = resp.json::<serde_json::Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(detail.contains(field), "{detail} should name {field}");
    }
    // The backend acted on none of them: no file was written anywhere, Bob's folder included.
    assert_eq!(backend.files(), before);
    // And none was charged.
    assert_eq!(storage_used(&app, &alice).await, used_before);
    // A bad name after the file part is refused all the same: the form is cut before its end.
    let boundary = "b0undary";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.zip\"\r\n\r\nPK..\r\n").into_bytes();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"study_date\"\r\n\r\n{DAY}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"patient_name\"\r\n\r\n../x\r\n--{boundary}--\r\n").as_bytes());
    let resp = app
        .as_user(&alice)
        .post("/upload_dicom_zip")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(backend.files(), before);
    // Not a form at all.
    let resp = app
        .as_user(&alice)
        .post("/upload_dicom_zip")
        .header("content-type", "application/zip")
        .body("PK")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("multipart/form-data"));
    // A patient name in any script passes, and so does a file name.
    let resp = upload(&app, &alice, "王五", DAY, "扫描 1.zip").await;
    assert_eq!(resp.status(), 200);
    assert!(
        backend.files().iter().any(|f| f.ends_with("扫描 1.zip")),
        "{:?}",
        backend.files()
    );
    let resp = upload(&app, &alice, "Zoë 张-三.1", DAY, "series 1.zip").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["folder"],
        format!("Zoë 张-三.1_{DAY}")
    );
}

async fn storage_used(app: &TestApp, a: &Account) -> serde_json::Value {
    let q = app.as_user(a).get_json("/admin/quotas/users/me", 200).await;
    q["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type_key"] == "storage_usage")
        .unwrap()["used"]
        .clone()
}

async fn path_parameters_are_single_safe_segments(db: Db) {
    let backend = backend(false).await;
    let app = gate(db, &backend, false, None).await;
    let alice = app.signup("alice").await;
    // Sent raw: an HTTP client library would resolve `%2e%2e` itself.
    for path in [
        "/get_key_results/%2e%2e/20250101",
        "/get_key_results/a%5Cb/20250101",
        "/get_key_results/a%01b/20250101",
        "/get_image/p/20250101/%2e%2e",
        "/process/p/%2E",
        "/task_status/%2e%2e",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            alice.access
        );
        let answer = raw_exchange(app.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("\"detail\""), "{path}: {answer}");
    }
    assert!(backend.task_ids().is_empty());
}

/// The API description says which proxied routes are isolated, and how.
#[tokio::test]
async fn the_api_description_names_the_owner_only_routes() {
    let backend = backend(false).await;
    let app = gate(Db::Sqlite, &backend, false, None).await;
    let doc = app.get_json("/openapi.json", 200).await;
    let description = doc["info"]["description"].as_str().unwrap();
    for line in [
        "- `GET /task_status/{task_id}`: owner-only task",
        "- `GET /upload_status/{upload_id}`: owner-only upload",
        "- `GET /list_tasks`: own tasks",
        "- `POST /upload_dicom_zip`: creates upload, form checked",
    ] {
        assert!(description.contains(line), "{line} in {description}");
    }
}

on_both!(
    same_name_and_date_never_meet_without_backend_auth,
    same_name_and_date_never_meet_with_backend_auth,
    another_accounts_ids_answer_404,
    ownership_survives_a_restart_and_reaches_every_replica,
    list_tasks_answers_each_caller_with_their_own,
    upload_names_are_single_safe_segments,
    path_parameters_are_single_safe_segments,
);
