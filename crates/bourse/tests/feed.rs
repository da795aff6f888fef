//! The live feed end to end: real binary, real Mosquitto, SQLite and PostgreSQL.

mod common;

use common::{create_user, database, publish, tick, Engine, ServeSpec, Server};
use serde_json::{json, Value};

on_both_engines! {
    ticks_become_visible_through_the_api => ticks_become_visible_through_the_api;
    target_rules_up_down_equality_and_stickiness => target_rules_up_down_equality_and_stickiness;
    http_errors_follow_the_contract => http_errors_follow_the_contract;
    malformed_messages_are_set_aside_and_later_ticks_land => malformed_messages_are_set_aside_and_later_ticks_land;
    out_of_order_and_duplicate_ticks => out_of_order_and_duplicate_ticks;
    no_acknowledged_tick_is_lost_across_a_kill => no_acknowledged_tick_is_lost_across_a_kill;
    analyses_in_the_list_and_on_the_stream => analyses_in_the_list_and_on_the_stream;
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn price_of(v: &Value) -> f64 {
    v["price"].as_f64().unwrap_or(f64::NAN)
}

async fn ticks_become_visible_through_the_api(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    let (cib, hamada) = (new_id(), new_id());

    // Subscribe to the live stream before publishing.
    let mut stream = server.get("/stocks/stream").await;
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));

    publish(
        spec.topic(),
        &[
            tick(&cib, "CIB", "28", "2019-12-15 14:36:33.462393"),
            tick(&hamada, "Hamada Inc", "7.45", "2019-12-15 14:36:34"),
        ],
    )
    .await;
    let stocks = server
        .eventually("/stocks", "both stocks listed", |v| {
            v.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    assert_eq!(
        stocks,
        json!([
            {"stock_id": cib, "name": "CIB", "price": 28, "availability": 46},
            {"stock_id": hamada, "name": "Hamada Inc", "price": 7.45, "availability": 46},
        ]),
        "ordered by name, documented shape, exact decimals"
    );
    let detail = server.get_json(&format!("/stocks/{cib}")).await;
    assert_eq!(
        detail,
        json!({"stock_id": cib, "name": "CIB", "price": 28, "availability": 46, "technical_analysis": null})
    );
    assert_eq!(
        server.get_json(&format!("/api/v1/stocks/{cib}")).await,
        detail,
        "/api/v1 alias"
    );
    let ticks = server.get_json(&format!("/stocks/{cib}/ticks")).await;
    assert_eq!(
        ticks,
        json!([{"price": 28, "availability": 46, "timestamp": "2019-12-15T14:36:33.462393Z"}])
    );

    // The stream carried the committed ticks.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(seen.contains(&cib) && seen.contains(&hamada)) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("SSE events within 5 s")
            .expect("SSE body")
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: tick"), "{seen}");
    assert!(
        seen.contains(r#""name":"Hamada Inc","price":7.45"#),
        "{seen}"
    );
    db.drop_db().await;
}

async fn post_analysis(server: &Server, id: &str, body: Value, auth: &str) -> reqwest::Response {
    server
        .http
        .post(server.url(&format!("/admin/stocks/{id}/analysis")))
        .header("authorization", auth)
        .json(&body)
        .send()
        .await
        .expect("POST analysis")
}

async fn target_rules_up_down_equality_and_stickiness(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    create_user(&db.url, "root", "rootpw", true);
    let admin = common::basic("root", "rootpw");
    let (up, down) = (new_id(), new_id());
    publish(
        spec.topic(),
        &[
            tick(&up, "UPCO", "10", "2020-01-01 10:00:00"),
            tick(&down, "DOWNCO", "10", "2020-01-01 10:00:00"),
        ],
    )
    .await;
    server
        .eventually("/stocks", "stocks known", |v| {
            v.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;

    // UP: not hit below the target, hit at equality, then sticky.
    let r = post_analysis(&server, &up, json!({"target": 12, "type": "UP"}), &admin).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"target": 12, "type": "UP", "target_hit": false})
    );
    publish(
        spec.topic(),
        &[tick(&up, "UPCO", "11.99", "2020-01-01 10:00:01")],
    )
    .await;
    server
        .eventually(&format!("/stocks/{up}"), "price 11.99", |v| {
            price_of(v) == 11.99
        })
        .await;
    let v = server.get_json(&format!("/stocks/{up}")).await;
    assert_eq!(v["technical_analysis"]["target_hit"], false);
    publish(
        spec.topic(),
        &[tick(&up, "UPCO", "12", "2020-01-01 10:00:02")],
    )
    .await;
    let v = server
        .eventually(&format!("/stocks/{up}"), "UP target hit at equality", |v| {
            v["technical_analysis"]["target_hit"] == true
        })
        .await;
    assert_eq!(
        v["technical_analysis"],
        json!({"target": 12, "type": "UP", "target_hit": true})
    );
    publish(
        spec.topic(),
        &[tick(&up, "UPCO", "3", "2020-01-01 10:00:03")],
    )
    .await;
    let v = server
        .eventually(&format!("/stocks/{up}"), "price fell to 3", |v| {
            price_of(v) == 3.0
        })
        .await;
    assert_eq!(
        v["technical_analysis"]["target_hit"], true,
        "sticky once hit"
    );

    // DOWN: judged at once against the current price when posted (equality included).
    let r = post_analysis(
        &server,
        &down,
        json!({"target": 10, "type": "DOWN"}),
        &admin,
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["target_hit"], true);
    let r = post_analysis(
        &server,
        &down,
        json!({"target": 8.5, "type": "DOWN"}),
        &admin,
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["target_hit"],
        false,
        "a new analysis replaces the old"
    );
    publish(
        spec.topic(),
        &[tick(&down, "DOWNCO", "8.6", "2020-01-01 10:00:01")],
    )
    .await;
    server
        .eventually(&format!("/stocks/{down}"), "price 8.6", |v| {
            price_of(v) == 8.6
        })
        .await;
    assert_eq!(
        server.get_json(&format!("/stocks/{down}")).await["technical_analysis"]["target_hit"],
        false
    );
    publish(
        spec.topic(),
        &[tick(&down, "DOWNCO", "8.2", "2020-01-01 10:00:02")],
    )
    .await;
    let v = server
        .eventually(&format!("/stocks/{down}"), "DOWN target hit", |v| {
            v["technical_analysis"]["target_hit"] == true
        })
        .await;
    assert_eq!(
        v["technical_analysis"],
        json!({"target": 8.5, "type": "DOWN", "target_hit": true})
    );

    // An UP target posted below the current price is hit at once.
    let r = post_analysis(&server, &down, json!({"target": 1, "type": "UP"}), &admin).await;
    assert_eq!(r.json::<Value>().await.unwrap()["target_hit"], true);
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("# HELP bourse_target_hits_total"),
        "{metrics}"
    );
    db.drop_db().await;
}

async fn http_errors_follow_the_contract(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    create_user(&db.url, "root", "rootpw", true);
    create_user(&db.url, "jane", "janepw", false);
    let id = new_id();
    publish(
        spec.topic(),
        &[tick(&id, "CIB", "28", "2020-01-01 10:00:00")],
    )
    .await;
    server
        .eventually("/stocks", "stock known", |v| {
            v.as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    let body = json!({"target": 29, "type": "UP"});

    // 401 without or with bad credentials, with a challenge and the DRF-style `detail` key.
    let r = server
        .http
        .post(server.url(&format!("/admin/stocks/{id}/analysis")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("Basic"));
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].is_string() && v["detail"].is_string(), "{v}");
    for bad in [
        common::basic("root", "wrong"),
        common::basic("nobody", "x"),
        "Basic !!!".into(),
        "Digest abc".into(),
    ] {
        assert_eq!(
            post_analysis(&server, &id, body.clone(), &bad)
                .await
                .status(),
            401,
            "{bad}"
        );
    }
    // 403 for a non-admin.
    let r = post_analysis(&server, &id, body.clone(), &common::basic("jane", "janepw")).await;
    assert_eq!(r.status(), 403);
    assert!(r.json::<Value>().await.unwrap()["message"].is_string());

    let admin = common::basic("root", "rootpw");
    // 404 for an unknown stock, with the feed API's `error` key.
    let r = post_analysis(&server, &new_id(), body.clone(), &admin).await;
    assert_eq!(r.status(), 404);
    let r = server.get(&format!("/stocks/{}", new_id())).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "stock not found");
    assert_eq!(
        server
            .get(&format!("/stocks/{}/ticks", new_id()))
            .await
            .status(),
        404
    );
    assert_eq!(server.get("/no/such/route").await.status(), 404);

    // 422 naming each bad field.
    let r = post_analysis(
        &server,
        &id,
        json!({"target": 0, "type": "SIDEWAYS"}),
        &admin,
    )
    .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    let fields: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["target", "type"]);
    for bad in [
        json!({"type": "UP"}),
        json!({"target": "29", "type": "UP"}),
        json!({"target": 29}),
        json!([1]),
    ] {
        assert_eq!(
            post_analysis(&server, &id, bad.clone(), &admin)
                .await
                .status(),
            422,
            "{bad}"
        );
    }
    // 400 for malformed syntax.
    let r = server
        .http
        .post(server.url(&format!("/admin/stocks/{id}/analysis")))
        .header("authorization", &admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["message"].is_string());
    assert_eq!(server.get("/stocks/not-a-uuid").await.status(), 400);
    assert_eq!(
        server
            .get(&format!("/stocks/{id}/ticks?bogus=1"))
            .await
            .status(),
        400
    );
    assert_eq!(
        server
            .get(&format!("/stocks/{id}/ticks?limit=0"))
            .await
            .status(),
        400
    );
    assert_eq!(
        server
            .get(&format!("/stocks/{id}/ticks?from=yesterday"))
            .await
            .status(),
        400
    );
    assert_eq!(
        server
            .get(&format!("/stocks/{id}/ticks?from=2020-01-01&to=2020-01-01"))
            .await
            .status(),
        200
    );
    // The analysis was never changed by the refused requests.
    assert_eq!(
        server.get_json(&format!("/stocks/{id}")).await["technical_analysis"],
        Value::Null
    );
    // Health, docs and metrics.
    assert_eq!(server.get("/_healthcheck").await.status(), 200);
    assert_eq!(server.get("/openapi.json").await.status(), 200);
    assert_eq!(server.get("/docs/").await.status(), 200);
    db.drop_db().await;
}

fn rejected_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("bourse_ticks_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn malformed_messages_are_set_aside_and_later_ticks_land(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    let (a, b) = (new_id(), new_id());
    let python = format!(
        "{{'stock_id': '{a}', 'name': 'Hamada Inc', 'price': 7.5, 'availability': 3, 'timestamp': '2019-12-15 14:36:33.462393'}}"
    );
    publish(
        spec.topic(),
        &[
            b"garbage \xff\xfe".to_vec(),
            br#"{"stock_id": "not-a-uuid", "name": "X", "price": 1, "availability": 1}"#.to_vec(),
            tick(&b, "NEG", "-5", "2020-01-01 10:00:00"),
            python.into_bytes(),
            tick(&b, "Edita", "19.5", "2020-01-01 10:00:00"),
        ],
    )
    .await;
    let stocks = server
        .eventually("/stocks", "valid ticks land after garbage", |v| {
            v.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    let names: Vec<&str> = stocks
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Edita", "Hamada Inc"]);
    assert_eq!(server.get_json(&format!("/stocks/{a}")).await["price"], 7.5);
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert_eq!(rejected_total(&metrics), 3.0, "{metrics}");
    assert!(
        metrics.contains(r#"bourse_ticks_rejected_total{reason="syntax"} 1"#),
        "{metrics}"
    );
    // Set aside in the dead-letter table, with their bytes.
    let store = bourse_store::Store::connect(&db.url, &Default::default())
        .await
        .unwrap();
    assert_eq!(store.dead_letter_count().await.unwrap(), 3);
    store.close().await;
    // And the consumer is still alive.
    publish(
        spec.topic(),
        &[tick(&b, "Edita", "20", "2020-01-01 10:00:01")],
    )
    .await;
    server
        .eventually(&format!("/stocks/{b}"), "still consuming", |v| {
            price_of(v) == 20.0
        })
        .await;
    db.drop_db().await;
}

async fn out_of_order_and_duplicate_ticks(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    let id = new_id();
    publish(
        spec.topic(),
        &[tick(&id, "CIB", "30", "2020-01-01 10:00:02")],
    )
    .await;
    server
        .eventually(&format!("/stocks/{id}"), "first tick", |v| {
            price_of(v) == 30.0
        })
        .await;
    // Older tick arrives late; then a duplicate of the newest with another price.
    publish(
        spec.topic(),
        &[
            tick(&id, "CIB", "25", "2020-01-01 10:00:01"),
            tick(&id, "CIB", "99", "2020-01-01 10:00:02"),
            tick(&id, "CIB", "25", "2020-01-01 10:00:01"),
        ],
    )
    .await;
    let ticks = server
        .eventually(&format!("/stocks/{id}/ticks"), "late tick stored", |v| {
            v.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    assert_eq!(
        ticks,
        json!([
            {"price": 30, "availability": 46, "timestamp": "2020-01-01T10:00:02Z"},
            {"price": 25, "availability": 46, "timestamp": "2020-01-01T10:00:01Z"},
        ])
    );
    // Let the duplicate certainly be processed, then check nothing moved.
    publish(
        spec.topic(),
        &[tick(&new_id(), "MARKER", "1", "2020-01-01 10:00:00")],
    )
    .await;
    server
        .eventually("/stocks", "marker", |v| {
            v.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        server.get_json(&format!("/stocks/{id}")).await["price"],
        30,
        "latest price never goes back"
    );
    assert_eq!(
        server
            .get_json(&format!("/stocks/{id}/ticks"))
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    db.drop_db().await;
}

async fn no_acknowledged_tick_is_lost_across_a_kill(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let id = new_id();
    let batch = |from: usize, to: usize| -> Vec<Vec<u8>> {
        (from..to)
            .map(|i| {
                let ts = format!(
                    "2021-03-01 10:{:02}:{:02}.{:06}",
                    i / 3600 % 60,
                    i / 60 % 60,
                    i % 60
                );
                tick(&id, "CIB", &format!("{}.{:02}", 20 + i / 100, i % 100), &ts)
            })
            .collect()
    };
    let mut server = Server::start(&spec).await;
    // Publish while the server is killed mid-stream: some of these are received but not yet
    // committed or acknowledged when SIGKILL lands.
    let first = batch(0, 300);
    let publisher = tokio::spawn({
        let topic = spec.topic().to_string();
        async move { publish(&topic, &first).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    server.kill();
    publisher.await.unwrap();
    // More arrive while no consumer runs: the broker keeps them for our persistent session.
    publish(spec.topic(), &batch(300, 500)).await;
    let server = Server::start(&spec).await;
    let ticks = server
        .eventually(
            &format!("/stocks/{id}/ticks?limit=1000"),
            "all 500 ticks stored",
            |v| v.as_array().is_some_and(|a| a.len() == 500),
        )
        .await;
    let distinct: std::collections::HashSet<&str> = ticks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timestamp"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), 500);
    // Clean stop (SIGTERM) exits 0 after draining.
    let mut server = server;
    assert!(server.terminate().success());
    db.drop_db().await;
}

/// The dashboard's data: every stock with its target in one request, and new targets pushed on
/// the stream as `analysis` events.
async fn analyses_in_the_list_and_on_the_stream(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    create_user(&db.url, "root", "rootpw", true);
    let admin = common::basic("root", "rootpw");
    let (cib, edita) = (new_id(), new_id());
    publish(
        spec.topic(),
        &[
            tick(&cib, "CIB", "28", "2020-01-01 10:00:00"),
            tick(&edita, "Edita", "19.5", "2020-01-01 10:00:00"),
        ],
    )
    .await;
    server
        .eventually("/stocks", "stocks known", |v| {
            v.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    let mut stream = server.get("/stocks/stream").await;
    assert_eq!(stream.status(), 200);

    let r = post_analysis(
        &server,
        &edita,
        json!({"target": 20.25, "type": "UP"}),
        &admin,
    )
    .await;
    assert_eq!(r.status(), 201);
    let expected = json!([
        {"stock_id": cib, "name": "CIB", "price": 28, "availability": 46, "technical_analysis": null},
        {"stock_id": edita, "name": "Edita", "price": 19.5, "availability": 46,
         "technical_analysis": {"target": 20.25, "type": "UP", "target_hit": false}},
    ]);
    for path in [
        "/stocks?include=technical_analysis",
        "/api/v1/stocks?include=technical_analysis",
    ] {
        assert_eq!(server.get_json(path).await, expected, "{path}");
    }
    // Each row is what the stock's own detail says.
    for row in expected.as_array().unwrap() {
        let id = row["stock_id"].as_str().unwrap();
        assert_eq!(&server.get_json(&format!("/stocks/{id}")).await, row);
    }
    // The plain list keeps the feed API's shape.
    let plain = server.get_json("/stocks").await;
    assert_eq!(
        plain[1],
        json!({"stock_id": edita, "name": "Edita", "price": 19.5, "availability": 46})
    );
    // Unknown parameters and values are refused, as everywhere.
    for path in ["/stocks?include=everything", "/stocks?colour=red"] {
        let r = server.get(path).await;
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["message"].is_string(), "{path}: {body}");
    }

    // The stream carried the new target (the subscription predates the POST).
    let mut seen = String::new();
    let want = format!(
        r#"event: analysis
data: {{"stock_id":"{edita}","target":20.25,"type":"UP","target_hit":false}}"#
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !seen.contains(&want) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("analysis event within 5 s; got {seen:?}"))
            .expect("SSE body")
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    db.drop_db().await;
}
