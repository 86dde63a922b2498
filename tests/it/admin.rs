//! Operators' endpoints, on SQLite and PostgreSQL: user search, disable/enable taking effect at
//! once, quota grants, and the audit log of every change.

use crate::common::{Db, Options, spawn_app_with};
use serde_json::Value;

async fn operators_manage_users_and_every_change_is_audited(db: Db) {
    let app = spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        ..Options::default()
    })
    .await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bobby").await;
    let admin = app
        .services()
        .auth()
        .create_admin("root@example.com", "root", "root-password")
        .await
        .unwrap();
    let t = app.login("root", "root-password").await;
    let root = format!("Bearer {}", t["access_token"].as_str().unwrap());

    for (method, path) in [
        ("GET", "/admin/users"),
        ("GET", "/admin/audit-log"),
        ("POST", &*format!("/admin/users/{}/disable", bob.id)),
    ] {
        let resp = app
            .as_user(&alice)
            .request(method.parse().unwrap(), path)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
    }
    let found: Value = app
        .with_authorization(&root)
        .get("/admin/users?q=ALI")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alice"]);
    let all: Value = app
        .with_authorization(&root)
        .get("/api/admin/users?limit=10")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);

    // Disabling works at once, on the gate's endpoints and on proxied routes.
    assert_eq!(
        app.as_user(&bob)
            .get("/api/ctai/list_patients")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = app
        .with_authorization(&root)
        .post(&format!("/admin/users/{}/disable", bob.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["is_active"], false);
    assert_eq!(
        app.as_user(&bob)
            .get("/api/ctai/list_patients")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        app.as_user(&bob)
            .get("/users/me")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let resp = app
        .with_authorization(&root)
        .post(&format!("/admin/users/{}/enable", bob.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.as_user(&bob)
            .get("/api/ctai/list_patients")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = app
        .with_authorization(&root)
        .post(&format!("/admin/users/{}/disable", admin.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422, "not oneself");

    // Grants add to this period's limit.
    let resp = app
        .with_authorization(&root)
        .post(&format!(
            "/admin/users/{}/grant?quota_type=api_calls_full_process&amount=3",
            alice.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let g: Value = resp.json().await.unwrap();
    assert_eq!(
        (g["new_limit"].as_i64(), g["remaining"].as_i64()),
        (Some(8), Some(8))
    );
    for bad in [
        "quota_type=api_calls_full_process&amount=0",
        "quota_type=nope&amount=1",
        "amount=1",
    ] {
        let resp = app
            .with_authorization(&root)
            .post(&format!("/admin/users/{}/grant?{bad}", alice.id))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status() == 422 || resp.status() == 404,
            "{bad}: {}",
            resp.status()
        );
    }
    let resp = app
        .with_authorization(&root)
        .put(&format!(
            "/admin/quotas/users/{}/adjust?quota_type=storage_usage&new_limit=500",
            alice.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let log: Value = app
        .with_authorization(&root)
        .get("/admin/audit-log")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<(&str, &str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["actor_id"].as_str().unwrap(),
            )
        })
        .collect();
    for (action, target) in [
        ("user.disable", &bob.id),
        ("user.enable", &bob.id),
        ("quota.grant", &alice.id),
        ("quota.adjust", &alice.id),
    ] {
        assert!(
            actions.contains(&(action, target.as_str(), admin.id.as_str())),
            "{action} in {actions:?}"
        );
    }
    let only: Value = app
        .with_authorization(&root)
        .get("/admin/audit-log?action=quota.grant")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["detail"]["amount"], 3);
    app.stop().await;
}

on_both!(operators_manage_users_and_every_change_is_audited);
