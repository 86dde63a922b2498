//! The bypass corpus: variants of blocked and metered backend routes, drawn from the path CVEs
//! of Envoy (CVE-2019-9901 `..`, CVE-2021-29492 `%2F`, CVE-2021-32779 `#`), APISIX
//! (CVE-2021-43557 raw vs normalised URI), Caddy (GHSA-m8m5 `..%2f`), case and `;` tricks,
//! request-target forms, and all of it again under the platform layout's `/api/ctai` prefix.
//! Each is sent as raw bytes (an HTTP client library would
//! normalise them first), through the shipped proxy.toml with one addition: a public catch-all,
//! so that anything the gate does not recognise as sensitive IS forwarded. The property: nothing
//! that reaches the backend is something the backend would route to a blocked or metered handler.

use crate::common::{raw_exchange, spawn_shipped};

/// The backend's sensitive handlers as Starlette sees them: templates matched segment by
/// segment on the percent-decoded path, case-sensitively, with `redirect_slashes`.
const SENSITIVE: &[&str] = &[
    "/list_tasks",
    "/admin/quotas/users/{}/reset",
    "/admin/quotas/usage-logs",
    "/process/{}/{}",
    "/continue_after_l3/{}/{}",
    "/l3_detect/{}/{}",
    "/upload_l3_mask/{}/{}",
    "/upload_middle_manual_mask/{}/{}",
    "/upload_dicom_zip",
    "/api/segmentation/sam2",
];

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Which sensitive backend handler (if any) would serve this forwarded path.
fn backend_handler(forwarded: &str) -> Option<&'static str> {
    let path = forwarded.split('?').next().unwrap();
    let decoded = String::from_utf8_lossy(&percent_decode(path)).into_owned();
    let matches = |p: &str, t: &str| {
        let ps: Vec<&str> = p.split('/').collect();
        let ts: Vec<&str> = t.split('/').collect();
        ps.len() == ts.len()
            && ps
                .iter()
                .zip(&ts)
                .all(|(a, b)| if *b == "{}" { !a.is_empty() } else { a == b })
    };
    for t in SENSITIVE {
        if matches(&decoded, t) || (decoded.len() > 1 && matches(decoded.trim_end_matches('/'), t))
        {
            return Some(t);
        }
        if t.starts_with("/admin") && decoded.starts_with("/admin/") {
            return Some("/admin/*");
        }
    }
    None
}

fn variants(base: &str) -> Vec<String> {
    let mut v = vec![
        base.to_string(),
        format!("{base}/"),
        format!("{base}//"),
        format!("/{base}"),
        base.replacen('/', "//", 2),
        format!("/x/..{base}"),
        format!("/./{}", &base[1..]),
        format!("/x/%2e%2e{base}"),
        format!("/x/%2E%2E{base}"),
        format!("/x/.%2e{base}"),
        format!("/x/..%2f{}", &base[1..]),
        format!("/x/..%2F{}", &base[1..]),
        format!("/x/..%5c{}", &base[1..]),
        format!("/x\\..\\{}", &base[1..]),
        format!("/status/..{base}"),
        format!("/api/segmentation/sam2/health/../../..{base}"),
        format!("{base}/."),
        format!("{base}/.."),
        format!("{base}/..;/"),
        format!("{base};"),
        format!("{base};x=1"),
        format!("{base}%00"),
        format!("{base}%0d%0a"),
        format!("{base}%09"),
        format!("{base}%20"),
        format!("{base}%2f"),
        format!("{base}#frag"),
        format!("{base}?next=/../status"),
        format!("{base}%3Fq"),
        format!("{base}%23x"),
        format!("/%252e%252e{base}"),
        format!("/%c0%ae%c0%ae{base}"),
        base.to_uppercase(),
        base.replacen('/', "/%2F", 1),
        base.replace('/', "%2F"),
        base.replace('_', "%5F"),
        base.replace('_', "%5f"),
    ];
    // Every single character percent-encoded, upper and lower case hex.
    for (i, c) in base.char_indices().filter(|(_, c)| *c != '/') {
        v.push(format!("{}%{:02X}{}", &base[..i], c as u32, &base[i + 1..]));
        v.push(format!("{}%{:02x}{}", &base[..i], c as u32, &base[i + 1..]));
    }
    v
}

#[tokio::test]
async fn no_variant_of_a_blocked_or_metered_route_reaches_the_backend() {
    let app = spawn_shipped("\n[[route]]\npath = \"/{*rest}\"\naccess = \"public\"\n").await;
    let bases = [
        "/list_tasks",
        "/admin/quotas/users/u1/reset",
        "/admin/quotas/usage-logs",
        "/process/p1/20250101",
        "/continue_after_l3/p1/20250101",
        "/l3_detect/p1/20250101",
        "/upload_l3_mask/p1/20250101",
        "/upload_dicom_zip",
        "/api/segmentation/sam2",
    ];
    let mut sent = 0;
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for base in bases {
        // Every variant also under the platform layout's backend prefix, and under mangled
        // spellings of it.
        let mut targets = variants(base);
        for v in variants(base) {
            targets.push(format!("/api/ctai{v}"));
        }
        for p in [
            "/api//ctai",
            "/api/./ctai",
            "/api/x/../ctai",
            "/API/ctai",
            "/api/ctai%2f",
            "/api%2Fctai",
            "/api/ct%61i",
        ] {
            targets.push(format!("{p}{base}"));
        }
        for target in targets {
            for method in ["GET", "POST"] {
                let req = format!(
                    "{method} {target} HTTP/1.1\r\nHost: gate.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let out = raw_exchange(app.addr, req.as_bytes()).await;
                let status = out.get(9..12).unwrap_or("---").to_string();
                *statuses.entry(status).or_default() += 1;
                sent += 1;
            }
        }
        // The absolute form of the request target.
        let req = format!(
            "POST http://{}{base} HTTP/1.1\r\nHost: gate.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            app.addr
        );
        raw_exchange(app.addr, req.as_bytes()).await;
        sent += 1;
    }
    let seen = app.upstream.seen();
    for s in &seen {
        assert_eq!(
            backend_handler(&s.path_and_query),
            None,
            "{} {} reached the backend unchecked",
            s.method,
            s.path_and_query
        );
    }
    // The corpus is not vacuous: the catch-all forwards what is harmless, and the rest is refused.
    assert!(sent > 1000, "{sent}");
    assert!(
        !seen.is_empty(),
        "harmless variants (such as upper case) are forwarded"
    );
    for refused in ["400", "401", "403"] {
        assert!(
            statuses.get(refused).copied().unwrap_or(0) > 0,
            "{statuses:?}"
        );
    }
    app.stop().await;
}

#[test]
fn the_backend_model_recognises_its_routes() {
    assert_eq!(backend_handler("/list_tasks"), Some("/list_tasks"));
    assert_eq!(backend_handler("/list_tasks/"), Some("/list_tasks"));
    assert_eq!(backend_handler("/list%5Ftasks"), Some("/list_tasks"));
    assert_eq!(backend_handler("/process/a/b?x=1"), Some("/process/{}/{}"));
    assert_eq!(backend_handler("/process/a%2Fb"), Some("/process/{}/{}"));
    assert_eq!(backend_handler("/PROCESS/a/b"), None);
    assert_eq!(backend_handler("/process/a/b/c"), None);
}
