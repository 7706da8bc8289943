//! The OpenAPI document describes the router: it is OpenAPI 3.1, every
//! operation it lists is routed (answers something other than "no such
//! route"), and every route answers problems in the documented form.

mod common;

use common::{Gateway, send};
use reqwest::Method;

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let gw = Gateway::start().await;
    let spec = send(gw.request(Method::GET, "/openapi.json", None)).await;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.json["openapi"], "3.1.0");
    let paths = spec.json["paths"].as_object().expect("paths");
    assert!(paths.len() >= 30, "{} paths", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", "x1").replace("{room}", "x1").replace("{payment_hash}", &"0".repeat(64));
        let concrete = concrete.replace("{payment_id}", "x1");
        assert!(!concrete.contains('{'), "an unfilled parameter in {path}");
        for method in item.as_object().expect("operations").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let reply = send(gw.request(method.clone(), &concrete, Some("csk_not_a_key"))).await;
            let detail = reply.json["detail"].as_str().unwrap_or_default();
            assert!(
                !(reply.status == 404 && detail == "no such route") && reply.status != 405,
                "{method} {path} is documented but not routed: {reply:?}"
            );
            if reply.status >= 400 {
                reply.assert_well_formed_problem();
            }
            operations += 1;
        }
    }
    assert!(operations >= 40, "{operations} operations");
    // And an undocumented path is not routed.
    let missing = send(gw.request(Method::GET, "/v1/nothing-here", None)).await;
    missing.assert_problem(404, "not-found");
}
