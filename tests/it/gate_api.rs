//! The gate's own operational endpoints.

use crate::common::{self, ORIGIN, Options, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_readyz_and_openapi() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );

    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["database"], "ok");
    assert_eq!(v["upstream"], "ok");

    let doc: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    // An empty query value is read as absent (the frontends send `?limit=`), and the document
    // says so of every query parameter.
    let logs = &doc["paths"]["/admin/quotas/usage-logs"]["get"]["parameters"];
    let offset = logs
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "offset"))
        .expect("usage-logs documents offset");
    assert_eq!(offset["allowEmptyValue"], true, "{offset}");
    // A flag's empty value is neither true nor false, and refused.
    let plans = &doc["paths"]["/plans/"]["get"]["parameters"];
    let active_only = plans
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "active_only"))
        .expect("plans documents active_only");
    assert!(
        active_only.get("allowEmptyValue").is_none(),
        "{active_only}"
    );
    assert!(
        app.upstream.seen().is_empty(),
        "the gate's own endpoints never reach the backend"
    );
    app.stop().await;

    let app = spawn_app_with(Options {
        upstream_url: Some(format!("http://127.0.0.1:{}", common::dead_port())),
        ..Options::default()
    })
    .await;
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "not_ready");
    assert_ne!(v["upstream"], "ok");
    app.stop().await;
}

fn metric_value(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name_and_labels} not in /metrics:\n{text}"))
}

#[tokio::test]
async fn metrics_count_requests_decisions_and_outcomes() {
    let app = crate::common::spawn_shipped("").await;
    let a = app.signup("metered").await;
    let auth = format!("Bearer {}", a.access);
    let resp = app
        .with_authorization(&auth)
        .post("/process/p1/20250101")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .with_authorization("Bearer forged")
        .get("/list_patients")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric_value(&text, "gate_requests_total{route=\"user\",status=\"2xx\"}") >= 1.0);
    assert!(metric_value(&text, "gate_quota_decisions_total{decision=\"committed\"}") >= 1.0);
    assert!(metric_value(&text, "gate_auth_total{outcome=\"invalid\"}") >= 1.0);
    assert!(metric_value(&text, "gate_auth_total{outcome=\"ok\"}") >= 1.0);
    assert!(
        metric_value(
            &text,
            "gate_cache_requests_total{cache=\"principal\",result=\"miss\"}"
        ) >= 1.0
    );
    assert!(metric_value(&text, "gate_db_pool_connections{state=\"open\"}") >= 1.0);
    assert!(
        text.contains("gate_upstream_duration_seconds_bucket"),
        "{}",
        text.lines()
            .filter(|l| l.contains("duration"))
            .take(8)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(text.contains("gate_overhead_duration_seconds_bucket"));
    assert!(metric_value(&text, "gate_request_duration_seconds_count{route=\"user\"}") >= 1.0);
    assert!(
        metric_value(
            &text,
            "gate_request_duration_seconds_bucket{route=\"user\",le=\"+Inf\"}"
        ) >= 1.0
    );
    assert!(
        !text.contains(&a.access) && !text.contains(a.id.as_str()),
        "no user or token in metrics"
    );
    app.stop().await;
}

#[tokio::test]
async fn swagger_ui_is_served_offline() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    for cdn in ["unpkg.com", "cdn.jsdelivr", "cdnjs", "https://"] {
        assert!(!html.contains(cdn), "the page loads nothing from {cdn}");
    }
    let js = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.bytes().await.unwrap().len() > 100_000,
        "the bundle is in the binary"
    );
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    app.stop().await;
}

/// The properties a schema (a `$ref` into components) requires.
fn required_of(doc: &serde_json::Value, schema: &serde_json::Value) -> Vec<String> {
    let target = match schema.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    };
    target["required"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Walks every endpoint the OpenAPI document lists and calls it as an anonymous client: each is
/// routed (never the gate's "no such endpoint"), answers one of its documented statuses, every
/// error is the documented `{"detail": "..."}`, and a JSON success has the documented fields.
#[tokio::test]
async fn every_documented_endpoint_answers_as_documented() {
    let app = crate::common::spawn_shipped("").await;
    let doc: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Each answer as the gate gives it: a redirect is an answer to check, not to follow.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut walked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let url = path
                .replace("{provider}", "sandbox")
                .replace("{quota_type}", "api_calls_full_process")
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        "00000000-0000-0000-0000-000000000000"
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let req = client.request(method.to_uppercase().parse().unwrap(), app.url(&url));
            let req = if matches!(method.as_str(), "post" | "put" | "patch") {
                req.json(&serde_json::json!({}))
            } else {
                req
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = resp.bytes().await.unwrap();
            let documented: Vec<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter_map(|k| k.parse().ok())
                .collect();
            let secured = op.get("security").is_some();
            let allowed =
                documented.contains(&status) || (secured && status == 401) || status == 422;
            assert!(
                allowed,
                "{method} {url}: {status} is not documented ({documented:?})"
            );
            if status >= 400 && ctype.starts_with("application/json") {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(
                    v["detail"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {url}: {v}"
                );
                assert_ne!(
                    v["detail"], "no such endpoint on the gate",
                    "{method} {url} is not routed"
                );
            }
            if (200..300).contains(&status) && ctype.starts_with("application/json") {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let schema =
                    &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
                let (item, sample) = match schema.get("type").and_then(|t| t.as_str()) {
                    Some("array") => (
                        &schema["items"],
                        v.as_array().and_then(|a| a.first()).cloned(),
                    ),
                    _ => (schema, Some(v.clone())),
                };
                if let Some(sample) = sample {
                    for field in required_of(&doc, item) {
                        assert!(
                            sample.get(&field).is_some(),
                            "{method} {url}: `{field}` missing in {sample}"
                        );
                    }
                }
            }
            walked += 1;
        }
    }
    assert!(walked >= 40, "{walked} endpoints");
    app.stop().await;
}
