//! Request metrics reach the global recorder (own test binary: the recorder is global).

mod common;

use common::*;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::test]
async fn requests_are_counted_by_route_template_method_and_status() {
    let handle = PrometheusBuilder::new().install_recorder().expect("recorder");
    profile_http_warp::describe_metrics();
    let app = App::new();
    let routes = app.routes();
    for _ in 0..2 {
        warp::test::request().path("/healthz").reply(&routes).await;
    }
    assert_eq!(app.get(ACTIVE).await.status(), 200);
    warp::test::request().path("/scan/me/please").reply(&routes).await;
    warp::test::request().method("POST").path("/user/profile").reply(&routes).await;

    let text = handle.render();
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(has(r#"http_requests_total{route="/healthz",method="GET",status="200"} 2"#), "{text}");
    assert!(has(r#"http_requests_total{route="/user/profile",method="GET",status="200"} 1"#), "{text}");
    assert!(has(r#"http_requests_total{route="other",method="GET",status="404"} 1"#), "{text}");
    assert!(has(r#"http_requests_total{route="/user/profile",method="POST",status="405"} 1"#), "{text}");
    assert!(text.contains("http_request_duration_seconds"), "{text}");
    assert!(!text.contains("/scan/me"), "unknown paths must not become labels");
}
