//! Discovery: the database's tables appear in GetPayload STREAM as discovered streams, found
//! through the dynamic config's `url` or through the running streams' urls.

mod common;

use common::*;
use kps_connector_core::grpc::convert::struct_to_json;
use kps_connector_core::testkit::{StreamDecl, TestConnector, unique_name};
use kps_connector_mysql::MysqlConnector;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_appear_as_discovered_streams() {
    let pool = db().await;
    let counted = table_name("kps_disc_auto");
    let plain = table_name("kps_disc_plain");
    create(
        &pool,
        &counted,
        "id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT",
    )
    .await;
    create(&pool, &plain, "k VARCHAR(8) PRIMARY KEY, v INT").await;
    let database = url::Url::parse(&url())
        .expect("url")
        .path()
        .trim_start_matches('/')
        .to_owned();

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    // Nothing to look into yet: no stream, no config.
    assert!(running.streams().await.iter().all(|s| !s.discovered));

    running
        .set_config(json!({"url": url()}))
        .await
        .expect("config accepted");
    let streams = running.streams().await;
    let find = |id: String| streams.iter().find(|s| s.id == id).cloned();
    let auto =
        find(format!("{database}.{counted}")).expect("the auto-increment table is discovered");
    assert!(auto.discovered && !auto.subscribed);
    assert_eq!(auto.direction, 1, "offered as ingress");
    let meta = struct_to_json(auto.metadata.as_ref());
    assert_eq!(
        serde_json::Value::Object(meta),
        json!({"url": url(), "table": counted, "mode": "incrementing", "cursor_column": "id"})
    );
    let plain_stream = find(format!("{database}.{plain}")).expect("the other table is discovered");
    assert_eq!(plain_stream.direction, 2, "offered as egress");

    // The urls of running streams are looked into as well; a refused config url is refused.
    running
        .set_config(json!({"url": null}))
        .await
        .expect("config cleared");
    running
        .apply(vec![StreamDecl::egress(
            "writer",
            unique_name("kps.mysql.disc").as_str(),
            json!({"url": url(), "table": plain}),
        )])
        .await
        .expect("stream accepted");
    let streams = running.streams().await;
    assert!(
        streams
            .iter()
            .any(|s| s.id == format!("{database}.{counted}") && s.discovered)
    );
    assert!(streams.iter().any(|s| s.id == "writer" && s.subscribed));
    let refused = running
        .set_config(json!({"url": "mysql://root:secret@127.0.0.1:3306/test"}))
        .await
        .expect_err("a password in the config url is refused");
    assert!(refused.message().contains("url") && !refused.message().contains("secret"));

    running.shutdown().await;
    drop_table(&pool, &counted).await;
    drop_table(&pool, &plain).await;
}
