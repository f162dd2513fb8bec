//! The pages without a running node: routing, the "not started" state, bad input, busy.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use super::*;

fn page() -> DebugPage {
    DebugPage::new(NodeInfo {
        version: "0.1.0".into(),
        zone: None,
    })
}

#[tokio::test]
async fn before_the_router_starts_the_overview_says_so() {
    let page = page().get("/debug/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(page.body.contains("not started yet"));
    assert!(page.body.contains("<td>(none)</td>"), "zone placeholder");
    assert!(page.body.contains("action=\"/debug/measure\""));
    assert!(!page.body.contains("<script"));
}

#[tokio::test]
async fn a_zone_from_the_configuration_is_shown() {
    let page = DebugPage::new(NodeInfo {
        version: "0.1.0".into(),
        zone: Some("eu-1<a>".into()),
    });
    let page = page.get("/debug", None).await;
    assert!(page.body.contains("<td>eu-1&lt;a&gt;</td>"));
}

#[tokio::test]
async fn a_bad_reference_is_a_400_page_that_says_why_and_keeps_the_input_escaped() {
    let page = page()
        .get(
            "/debug/measure",
            Some("image=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("not an image reference"));
    assert!(
        page.body
            .contains("value=\"&lt;script&gt;alert(1)&lt;/script&gt;\"")
    );
    assert!(!page.body.contains("<script>"));
}

#[tokio::test]
async fn a_second_measure_while_one_runs_gets_a_busy_page() {
    let page = page();
    let _running = page.measuring.try_acquire().unwrap();
    let busy = page
        .get("/debug/measure", Some("image=example.com%2Fa%2Fb%3Av1"))
        .await;
    assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(busy.body.contains("Busy: another measure is running"));
}

#[tokio::test]
async fn the_measure_form_alone_and_unknown_pages() {
    let form = page().get("/debug/measure", None).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("name=\"image\""));
    let missing = page().get("/debug/nothing", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
