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
        .client
        .post(app.url("/process/p1/20250101"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .client
        .get(app.url("/list_patients"))
        .header("authorization", "Bearer forged")
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
    assert!(
        !text.contains(&a.access) && !text.contains(&a.id),
        "no user or token in metrics"
    );
    app.stop().await;
}
