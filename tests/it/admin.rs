//! Operators' endpoints, on SQLite and PostgreSQL: user search, disable/enable taking effect at
//! once, quota grants, and the audit log of every change.

use crate::common::{Db, Options, TestApp, spawn_app_with};

async fn app(db: Db) -> TestApp {
    spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        ..Options::default()
    })
    .await
}

/// The superuser's `Authorization` and id.
async fn root(app: &TestApp) -> (String, String) {
    let root = app.admin_bearer().await;
    let me = app
        .with_authorization(&root)
        .get_json("/users/me", 200)
        .await;
    (root, me["id"].as_str().unwrap().to_string())
}

/// Users, the audit log and disabling are for superusers only.
async fn admin_endpoints_are_for_superusers(db: Db) {
    let app = app(db).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bobby").await;
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
    app.stop().await;
}

/// Operators find users by a part of their name or address, whatever its case, and page
/// through all of them (also under the platform layout's `/api` prefix).
async fn operators_find_users(db: Db) {
    let app = app(db).await;
    app.signup("alice").await;
    app.signup("bobby").await;
    let (root, _) = root(&app).await;
    let admin = app.with_authorization(&root);
    let found = admin.get_json("/admin/users?q=ALI", 200).await;
    let names: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alice"]);
    let all = admin.get_json("/api/admin/users?limit=10", 200).await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    app.stop().await;
}

/// A disabled account is refused at once, on the gate's endpoints and on proxied routes, and
/// served again once enabled; an operator cannot disable themself.
async fn disabling_an_account_takes_effect_at_once(db: Db) {
    let app = app(db).await;
    let bob = app.signup("bobby").await;
    let (root, root_id) = root(&app).await;
    let admin = app.with_authorization(&root);
    let bobs = app.as_user(&bob);
    assert_eq!(bobs.get_status("/api/ctai/list_patients").await, 200);
    let off = admin
        .post_json(&format!("/admin/users/{}/disable", bob.id), 200)
        .await;
    assert_eq!(off["is_active"], false);
    assert_eq!(bobs.get_status("/api/ctai/list_patients").await, 403);
    assert_eq!(bobs.get_status("/users/me").await, 403);
    admin
        .post_json(&format!("/admin/users/{}/enable", bob.id), 200)
        .await;
    assert_eq!(bobs.get_status("/api/ctai/list_patients").await, 200);
    let resp = admin
        .post(&format!("/admin/users/{root_id}/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422, "not oneself");
    app.stop().await;
}

/// A grant adds to this period's limit; a zero amount, an unknown quota type or none at all
/// is refused.
async fn grants_add_to_this_periods_limit(db: Db) {
    let app = app(db).await;
    let alice = app.signup("alice").await;
    let (root, _) = root(&app).await;
    let admin = app.with_authorization(&root);
    let g = admin
        .post_json(
            &format!(
                "/admin/users/{}/grant?quota_type=api_calls_full_process&amount=3",
                alice.id
            ),
            200,
        )
        .await;
    assert_eq!(
        (g["new_limit"].as_i64(), g["remaining"].as_i64()),
        (Some(8), Some(8))
    );
    for (bad, status) in [
        ("quota_type=api_calls_full_process&amount=0", 422),
        ("quota_type=nope&amount=1", 404),
        ("amount=1", 422),
    ] {
        let resp = admin
            .post(&format!("/admin/users/{}/grant?{bad}", alice.id))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{bad}");
    }
    app.stop().await;
}

/// Every administrative change is in the audit log under the operator who made it, and the
/// log filters by action.
async fn every_administrative_change_is_audited(db: Db) {
    let app = app(db).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bobby").await;
    let (root, root_id) = root(&app).await;
    let admin = app.with_authorization(&root);
    admin
        .post_json(&format!("/admin/users/{}/disable", bob.id), 200)
        .await;
    admin
        .post_json(&format!("/admin/users/{}/enable", bob.id), 200)
        .await;
    admin
        .post_json(
            &format!(
                "/admin/users/{}/grant?quota_type=api_calls_full_process&amount=3",
                alice.id
            ),
            200,
        )
        .await;
    let resp = admin
        .put(&format!(
            "/admin/quotas/users/{}/adjust?quota_type=storage_usage&new_limit=500",
            alice.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let log = admin.get_json("/admin/audit-log", 200).await;
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
            actions.contains(&(action, target.as_str(), root_id.as_str())),
            "{action} in {actions:?}"
        );
    }
    let only = admin
        .get_json("/admin/audit-log?action=quota.grant", 200)
        .await;
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["detail"]["amount"], 3);
    app.stop().await;
}

on_both!(
    admin_endpoints_are_for_superusers,
    operators_find_users,
    disabling_an_account_takes_effect_at_once,
    grants_add_to_this_periods_limit,
    every_administrative_change_is_audited,
);
