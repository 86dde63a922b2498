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
