//! A stand-in for the real iDoctor backend that keys its state the way the real one does
//! (`shared/reference/idoctor-backend.md` §1.2-1.4, §2.3, §7): task ids `main_<patient>_<date>`,
//! upload ids `<patient>_<date>_<ts>`, case locks keyed `<patient>_<date>`, all global and in
//! memory; `/list_tasks` lists everyone's tasks; errors come back as HTTP 200. Folders live on
//! a real disk: `<data>/<patient>_<date>`, or `<data>/<user>/<patient>_<date>` when it runs with
//! its own auth (a backend JWT checked with the shared secret, like `ENABLE_AUTH=true`). Names
//! are joined into paths unchecked, as the real backend does, so a name with `../` really
//! writes outside its folder. An upload acts only once the whole multipart body has arrived
//! (Starlette reads the form before the handler runs).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tempfile::TempDir;

pub struct IDoctor {
    pub addr: SocketAddr,
    state: Arc<Backend>,
    _dir: TempDir,
}

struct Backend {
    data: PathBuf,
    /// `ENABLE_AUTH=true`: the backend's `JWT_SECRET_KEY`.
    auth_secret: Option<String>,
    tasks: Mutex<BTreeMap<String, Value>>,
    uploads: Mutex<BTreeMap<String, Value>>,
    /// `_patient_locks`, keyed `<patient>_<date>`.
    locks: Mutex<HashSet<String>>,
    /// How long the synchronous `/l3_detect` works before it answers.
    l3_work: Mutex<std::time::Duration>,
    /// `/l3_detect` runs that finished their work, whether or not anyone was left to answer.
    l3_done: std::sync::atomic::AtomicUsize,
}

impl IDoctor {
    /// Starts the stand-in; `auth_secret` is the backend's own JWT secret when it runs with
    /// `ENABLE_AUTH=true`.
    pub async fn start(auth_secret: Option<&str>) -> IDoctor {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(Backend {
            data: dir.path().join("data"),
            auth_secret: auth_secret.map(str::to_string),
            tasks: Mutex::default(),
            uploads: Mutex::default(),
            locks: Mutex::default(),
            l3_work: Mutex::new(std::time::Duration::ZERO),
            l3_done: Default::default(),
        });
        std::fs::create_dir_all(&state.data).unwrap();
        let app = Router::new()
            .route("/upload_dicom_zip", post(upload))
            .route("/upload_status/{upload_id}", get(upload_status))
            .route("/process/{patient}/{date}", post(process))
            .route(
                "/continue_after_l3/{patient}/{date}",
                post(continue_after_l3),
            )
            .route("/l3_detect/{patient}/{date}", post(l3_detect))
            .route("/task_status/{task_id}", get(task_status))
            .route("/list_tasks", get(list_tasks))
            .route("/list_patients", get(list_patients))
            .route("/get_key_results/{patient}/{date}", get(key_results))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        IDoctor {
            addr,
            state,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The backend's data folder (`DATA_ROOT`).
    pub fn data(&self) -> &std::path::Path {
        &self.state.data
    }

    /// Every task id the backend holds, whoever started it.
    pub fn task_ids(&self) -> Vec<String> {
        self.state.tasks.lock().unwrap().keys().cloned().collect()
    }

    /// Every upload id the backend handed out, whoever sent it.
    pub fn upload_ids(&self) -> Vec<String> {
        self.state.uploads.lock().unwrap().keys().cloned().collect()
    }

    /// Makes `/l3_detect` take `work` before it answers (a synchronous GPU step).
    pub fn set_l3_work(&self, work: std::time::Duration) {
        *self.state.l3_work.lock().unwrap() = work;
    }

    /// `/l3_detect` runs that did their work.
    pub fn l3_done(&self) -> usize {
        self.state.l3_done.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Ends a running task as the pipeline would (`completed` or `failed`, with an `error` and
    /// `failed_at` as the real one sets them), releasing its lock.
    pub fn finish(&self, task_id: &str, status: &str) {
        let mut tasks = self.state.tasks.lock().unwrap();
        let task = tasks.get_mut(task_id).expect("a task the backend started");
        task["status"] = status.into();
        if status == "failed" {
            // The real one's errors name the case's folder, patient name and all.
            let error = format!(
                "CUDA out of memory in {}",
                task["output_dir"].as_str().unwrap_or("")
            );
            task["error"] = error.into();
            task["failed_at"] = "2025-01-01T10:00:00".into();
        } else {
            task["progress"] = 100.into();
        }
        if let Some(case) = task["case"].as_str() {
            self.state.locks.lock().unwrap().remove(case);
        }
    }

    /// Every file under the data folder, relative to it.
    pub fn files(&self) -> Vec<String> {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.state.data, &self.state.data, &mut out);
        out.sort();
        out
    }
}

/// Who the backend takes the caller for: with its own auth on, the `sub` of a valid backend
/// JWT (a request without one is refused, as its middleware does); otherwise nobody.
fn caller(b: &Backend, headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
    let Some(secret) = &b.auth_secret else {
        return Ok(None);
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Box::new((StatusCode::UNAUTHORIZED, Json(json!({"detail": "未认证"}))).into_response())
        })?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|_| {
        Box::new(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"detail": "令牌无效"})),
            )
                .into_response(),
        )
    })?;
    Ok(claims.claims["sub"].as_str().map(str::to_string))
}

/// `_patient_root()`: joined unchecked, like the real backend.
fn patient_root(b: &Backend, user: &Option<String>, patient: &str, date: &str) -> PathBuf {
    let base = match user {
        Some(u) => b.data.join(u),
        None => b.data.clone(),
    };
    base.join(format!("{patient}_{date}"))
}

fn shown(b: &Backend, p: &std::path::Path) -> String {
    format!("data/{}", p.strip_prefix(&b.data).unwrap().display())
}

async fn upload(
    State(b): State<Arc<Backend>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let user = match caller(&b, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let boundary = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"detail": "multipart expected"})),
        )
            .into_response();
    };
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let (mut patient, mut date, mut file) = (None, None, None);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("patient_name") => patient = field.text().await.ok(),
            Some("study_date") => date = field.text().await.ok(),
            Some("file") => {
                let name = field.file_name().unwrap_or("upload.zip").to_string();
                file = Some((name, field.bytes().await.unwrap_or_default()));
            }
            _ => {}
        }
    }
    let (Some(patient), Some(date), Some((filename, bytes))) = (patient, date, file) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"detail": "field required"})),
        )
            .into_response();
    };
    let case = format!("{patient}_{date}");
    if b.locks.lock().unwrap().contains(&case) {
        return Json(json!({"status": "blocked", "message": format!("{case} 正在处理中")}))
            .into_response();
    }
    let root = patient_root(&b, &user, &patient, &date);
    std::fs::create_dir_all(root.join("input")).unwrap();
    std::fs::write(root.join(format!("{filename}.part")), &bytes).unwrap();
    std::fs::rename(
        root.join(format!("{filename}.part")),
        root.join("input").join(&filename),
    )
    .unwrap();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let upload_id = format!("{case}_{ts}");
    b.uploads.lock().unwrap().insert(
        upload_id.clone(),
        json!({"status": "done", "percent": 100, "folder": case, "filename": filename,
               "message": format!("{case} 上传完成")}),
    );
    Json(json!({"status": "ok", "upload_id": upload_id, "folder": case, "message": "上传成功"}))
        .into_response()
}

async fn upload_status(State(b): State<Arc<Backend>>, Path(id): Path<String>) -> Json<Value> {
    Json(
        b.uploads
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| json!({"status": "not_found"})),
    )
}

async fn start_task(
    b: &Backend,
    headers: &HeaderMap,
    kind: &str,
    patient: &str,
    date: &str,
) -> Response {
    let user = match caller(b, headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let case = format!("{patient}_{date}");
    let task_id = format!("{kind}_{case}");
    let root = patient_root(b, &user, patient, date);
    if !root.join("input").exists() {
        return Json(json!({"error": "请先上传 DICOM"})).into_response();
    }
    let mut tasks = b.tasks.lock().unwrap();
    if tasks
        .get(&task_id)
        .is_some_and(|t| t["status"] == "processing")
    {
        return Json(
            json!({"status": "processing", "task_id": task_id, "message": "任务正在运行"}),
        )
        .into_response();
    }
    if !b.locks.lock().unwrap().insert(case.clone()) {
        return Json(json!({"status": "blocked", "message": format!("{case} 已被锁定")}))
            .into_response();
    }
    let output = root.join("output");
    std::fs::create_dir_all(&output).unwrap();
    std::fs::write(
        output.join("hu_statistics.csv"),
        format!("patient,{patient}\n"),
    )
    .unwrap();
    tasks.insert(
        task_id.clone(),
        json!({"status": "processing", "progress": 10, "case": case,
               "output_dir": shown(b, &output), "message": format!("{patient} 处理中")}),
    );
    Json(json!({"status": "submitted", "task_id": task_id, "message": "任务已提交"}))
        .into_response()
}

async fn process(
    State(b): State<Arc<Backend>>,
    headers: HeaderMap,
    Path((p, d)): Path<(String, String)>,
) -> Response {
    start_task(&b, &headers, "main", &p, &d).await
}

async fn continue_after_l3(
    State(b): State<Arc<Backend>>,
    headers: HeaderMap,
    Path((p, d)): Path<(String, String)>,
) -> Response {
    start_task(&b, &headers, "cont", &p, &d).await
}

/// The synchronous L3 step: works for a while, then answers (errors as HTTP 200 with an
/// `error` key, as the real one does). The work is done whether or not the caller waited.
async fn l3_detect(
    State(b): State<Arc<Backend>>,
    headers: HeaderMap,
    Path((p, d)): Path<(String, String)>,
) -> Response {
    let user = match caller(&b, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    // A worker thread of its own, as FastAPI runs a sync handler: a caller that hangs up does
    // not stop it.
    let work = *b.l3_work.lock().unwrap();
    let root = patient_root(&b, &user, &p, &d);
    let done = tokio::spawn(async move {
        tokio::time::sleep(work).await;
        if !root.join("input").exists() {
            return json!({"error": "请先上传 DICOM"});
        }
        b.l3_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        json!({"status": "success", "l3_slice": 42})
    });
    Json(done.await.unwrap()).into_response()
}

async fn task_status(State(b): State<Arc<Backend>>, Path(id): Path<String>) -> Json<Value> {
    Json(
        b.tasks
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| json!({"status": "not_found"})),
    )
}

async fn list_tasks(State(b): State<Arc<Backend>>) -> Json<Value> {
    let tasks = b.tasks.lock().unwrap();
    Json(json!({"tasks": *tasks, "count": tasks.len()}))
}

async fn list_patients(State(b): State<Arc<Backend>>, headers: HeaderMap) -> Response {
    let user = match caller(&b, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let base = match &user {
        Some(u) => b.data.join(u),
        None => b.data.clone(),
    };
    let mut patients: Vec<String> = std::fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("input").is_dir())
        .map(|e| e.file_name().to_string_lossy().replace('_', "-"))
        .collect();
    patients.sort();
    Json(json!({"count": patients.len(), "patients": patients})).into_response()
}

async fn key_results(
    State(b): State<Arc<Backend>>,
    headers: HeaderMap,
    Path((p, d)): Path<(String, String)>,
) -> Response {
    let user = match caller(&b, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let output = patient_root(&b, &user, &p, &d).join("output");
    match std::fs::read_to_string(output.join("hu_statistics.csv")) {
        Ok(csv) => Json(json!({"csv_files": {"hu_statistics.csv": csv}, "middle_images": []}))
            .into_response(),
        Err(_) => Json(json!({"error": "结果文件夹不存在"})).into_response(),
    }
}
