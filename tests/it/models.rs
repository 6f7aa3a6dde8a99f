//! Multi-model participants over real sockets: registering several models, matching names
//! (exact, case, Ollama's `:latest`, aliases), preferring a loaded model, the catalogue, the
//! authenticated update and its event, and the bounds on a model list.
#![cfg(feature = "tools")]

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::common::*;

async fn join_with(addr: SocketAddr, code: &str, body: Value) -> Resp {
    req(addr, "POST", &format!("/rooms/{code}/join"), Some(body)).await
}

async fn chat(addr: SocketAddr, code: &str, model: &str) -> Resp {
    req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await
}

async fn update(addr: SocketAddr, code: &str, id: &str, secret: Option<&str>, body: Value) -> Resp {
    let extra = secret.map_or(String::new(), |s| {
        format!("Gambiarra-Participant-Secret: {s}\r\n")
    });
    req_with(
        addr,
        "PATCH",
        &format!("/rooms/{code}/participants/{id}"),
        Some(body),
        &extra,
    )
    .await
}

/// The `model` each request the mock received asked for.
fn upstream_models(mock: &gambiarra::tools::mock::MockLlm) -> Vec<String> {
    mock.requests()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["model"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn one_participant_serves_several_models_under_their_own_names() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "multi").await;
    let mock = quick_mock().await;
    let r = join_with(
        addr,
        &code,
        json!({
            "id": "box", "nickname": "box", "endpoint": mock.url(),
            "models": [
                "qwen2.5:7b",
                {"name": "llama3:latest", "loaded": true},
                {"name": "meta-llama-3-8b-instruct", "aliases": ["l3-big"], "loaded": false},
            ],
        }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    let p = &r.json()["participant"];
    // No `model`: the first listed is primary.
    assert_eq!(p["model"], "qwen2.5:7b");
    assert_eq!(
        p["models"],
        json!([
            {"name": "qwen2.5:7b"},
            {"name": "llama3:latest", "loaded": true},
            {"name": "meta-llama-3-8b-instruct", "aliases": ["l3-big"], "loaded": false},
        ])
    );
    assert!(r.json().get("dropped").is_none());
    // Each name the matching rules allow reaches the participant; the upstream is asked for
    // the participant's own name.
    for (asked, served) in [
        ("llama3", "llama3:latest"),
        ("model:LLAMA3", "llama3:latest"),
        ("llama3:latest", "llama3:latest"),
        ("Qwen2.5:7B", "qwen2.5:7b"),
        ("l3-big", "meta-llama-3-8b-instruct"),
        ("model:L3-BIG", "meta-llama-3-8b-instruct"),
        ("box", "qwen2.5:7b"),
        ("*", "qwen2.5:7b"),
    ] {
        let before = mock.requests().len();
        let r = chat(addr, &code, asked).await;
        assert_eq!(r.status, 200, "{asked}: {}", r.error());
        assert_eq!(upstream_models(&mock)[before], served, "{asked}");
    }
    // Another tag is another model.
    for missing in ["llama3:8b", "qwen2.5", "model:box"] {
        let r = chat(addr, &code, missing).await;
        assert_eq!(r.status, 404, "{missing}");
    }
    // Its id may not be a name another participant's model answers to (as matched).
    let r = join_with(
        addr,
        &code,
        json!({"id": "LLAMA3", "nickname": "x", "model": "m", "endpoint": mock.url()}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("name of a model"), "{}", r.error());
    hub.shutdown().await;
}

#[tokio::test]
async fn the_loaded_model_wins_at_equal_load() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "loaded").await;
    let (cold, warm, unknown) = (quick_mock().await, quick_mock().await, quick_mock().await);
    let mut secrets = Vec::new();
    for (id, mock, loaded) in [
        ("cold", &cold, json!(false)),
        ("unknown", &unknown, Value::Null),
        ("warm", &warm, json!(true)),
    ] {
        let mut model = json!({"name": "llama3:latest"});
        if !loaded.is_null() {
            model["loaded"] = loaded;
        }
        let r = join_with(
            addr,
            &code,
            json!({"id": id, "nickname": id, "endpoint": mock.url(), "models": [model]}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.error());
        secrets.push(secret_of(&r));
    }
    for _ in 0..4 {
        assert_eq!(chat(addr, &code, "llama3").await.status, 200);
    }
    assert_eq!(
        (
            cold.requests().len(),
            unknown.requests().len(),
            warm.requests().len()
        ),
        (0, 0, 4)
    );
    // The warm one unloads it: one that may have it loaded goes before one that has not.
    let r = update(
        addr,
        &code,
        "warm",
        Some(&secrets[2]),
        json!({"models": [{"name": "llama3:latest", "loaded": false}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    for _ in 0..2 {
        assert_eq!(chat(addr, &code, "llama3").await.status, 200);
    }
    assert_eq!(unknown.requests().len(), 2);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_model_that_ran_is_loaded_from_then_on() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "learns").await;
    let mock = quick_mock().await;
    let r = join_with(
        addr,
        &code,
        json!({"id": "p", "nickname": "p", "endpoint": mock.url(),
               "models": [{"name": "phi3", "loaded": false}, {"name": "llama3"}]}),
    )
    .await;
    assert_eq!(r.status, 201);
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    // A model whose state is unknown stays unknown; one said unloaded is loaded once it ran.
    for model in ["llama3", "phi3"] {
        assert_eq!(chat(addr, &code, model).await.status, 200);
        assert_eq!(sse.until("llm:complete").await.data["model"], model);
    }
    let e = sse.until("participant:updated").await;
    assert_eq!(
        e.data["models"],
        json!([{"name": "phi3", "loaded": true}, {"name": "llama3"}])
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn load_comes_before_loaded() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "load").await;
    let warm = gambiarra::tools::mock::MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        gambiarra::tools::mock::MockConfig {
            tokens: 2,
            token_delay: std::time::Duration::from_millis(300),
            ..Default::default()
        },
        true,
    )
    .await
    .unwrap();
    let cold = quick_mock().await;
    for (id, mock, loaded) in [("warm", &warm, true), ("cold", &cold, false)] {
        let r = join_with(
            addr,
            &code,
            json!({"id": id, "nickname": id, "endpoint": mock.url(),
                   "models": [{"name": "phi3", "loaded": loaded}]}),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    // A stream keeps the warm one busy: the next request goes to the idle one, loaded or not.
    let mut busy = Conn::open(addr).await;
    busy.send(&build(
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(&json!({"model": "phi3", "stream": true, "messages": []})),
        "",
    ))
    .await;
    assert_eq!(busy.read_head().await.unwrap().0, 200);
    assert_eq!(chat(addr, &code, "phi3").await.status, 200);
    assert_eq!((warm.requests().len(), cold.requests().len()), (1, 1));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_participant_updates_its_models_with_its_secret() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "update").await;
    let mock = quick_mock().await;
    let r = join_with(
        addr,
        &code,
        json!({"id": "p", "nickname": "p", "model": "llama3", "endpoint": mock.url()}),
    )
    .await;
    // The seed's single-model join lists its one model.
    assert_eq!(
        r.json()["participant"]["models"],
        json!([{"name": "llama3"}])
    );
    let secret = secret_of(&r);
    let (status, _, mut sse) = Sse::open(addr, &code, "").await;
    assert_eq!(status, 200);
    sse.until("connected").await;

    let change = json!({"models": ["llama3", {"name": "phi3", "loaded": true}]});
    let r = update(addr, &code, "p", None, change.clone()).await;
    assert_eq!(r.status, 401, "{}", r.error());
    let r = update(addr, &code, "p", Some("not-the-secret"), change.clone()).await;
    assert_eq!(r.status, 403, "{}", r.error());
    let r = update(addr, &code, "nobody", Some(&secret), change.clone()).await;
    assert_eq!(r.status, 404, "{}", r.error());
    assert_eq!(chat(addr, &code, "phi3").await.status, 404);

    let r = update(addr, &code, "p", Some(&secret), change.clone()).await;
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(r.json()["participant"]["models"][1]["name"], "phi3");
    let e = sse.until("participant:updated").await;
    assert_eq!(e.data["id"], "p");
    assert_eq!(e.data["model"], "llama3");
    assert_eq!(e.data["models"][1], json!({"name": "phi3", "loaded": true}));
    assert_eq!(chat(addr, &code, "phi3").await.status, 200);

    // The primary vanishes: the list's first takes its place. The body's secret works too.
    let r = update(
        addr,
        &code,
        "p",
        None,
        json!({"models": ["phi3", "mistral"], "nickname": "renamed", "participantSecret": secret}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    let e = sse.until("participant:updated").await;
    assert_eq!(
        (e.data["model"].as_str(), e.data["nickname"].as_str()),
        (Some("phi3"), Some("renamed"))
    );
    assert_eq!(chat(addr, &code, "llama3").await.status, 404);
    // Bad input is refused whole.
    for bad in [
        json!({"models": "phi3"}),
        json!({"models": [""]}),
        json!({"nickname": ""}),
        json!({"config": {"temperature": 9}}),
        json!({"model": "x".repeat(300)}),
    ] {
        let r = update(addr, &code, "p", Some(&secret), bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.error());
    }
    let listed = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    assert_eq!(
        listed.json()["participants"][0]["models"],
        json!([{"name": "phi3"}, {"name": "mistral"}])
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_long_model_list_is_cut_and_the_participant_told() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "many").await;
    let mut models: Vec<Value> = (0..300).map(|i| json!(format!("m{i}"))).collect();
    models.insert(3, json!("x".repeat(257)));
    models.insert(4, json!({"name": "a", "aliases": ["m0"]}));
    let r = join_with(
        addr,
        &code,
        json!({"id": "hoarder", "nickname": "h", "endpoint": "http://192.0.2.1:1", "models": models}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    let v = r.json();
    assert_eq!(v["participant"]["models"].as_array().unwrap().len(), 256);
    // 300 + 1 good names, 256 kept; one too long; one alias taken: 47 left out, the first
    // 32 named (names are checked before aliases), the rest counted.
    let dropped = v["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 33, "{dropped:?}");
    assert_eq!(dropped[0]["reason"], "longer than 256 characters");
    assert_eq!(
        dropped[1],
        json!({"name": "m255", "reason": "more than 256 models"})
    );
    assert_eq!(
        dropped[32],
        json!({"name": "…", "reason": "and 15 more left out"})
    );
    // Nothing usable is a clear 400.
    let r = join_with(
        addr,
        &code,
        json!({"id": "empty", "nickname": "e", "endpoint": "http://192.0.2.1:1", "models": ["", "\u{7}"]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("no usable model"), "{}", r.error());
    let r = join_with(
        addr,
        &code,
        json!({"id": "none", "nickname": "e", "endpoint": "http://192.0.2.1:1", "models": []}),
    )
    .await;
    assert_eq!(r.status, 400);
    hub.shutdown().await;
}

#[tokio::test]
async fn ids_and_model_names_share_one_namespace() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "names").await;
    let (squatter, victim) = (quick_mock().await, quick_mock().await);
    // An id taken first: a model of that name (any spelling) or an alias cannot capture the
    // requests meant for the participant, nor the other way round.
    let r = join_with(
        addr,
        &code,
        json!({"id": "llama3:latest", "nickname": "s", "model": "evil", "endpoint": squatter.url()}),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = join_with(
        addr,
        &code,
        json!({"id": "victim", "nickname": "v", "endpoint": victim.url(),
               "models": ["Llama3", {"name": "phi3", "aliases": ["llama3:latest", "p3"]}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    let v = r.json();
    assert_eq!(
        v["participant"]["models"],
        json!([{"name": "phi3", "aliases": ["p3"]}])
    );
    let reasons: Vec<&str> = v["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["Llama3", "llama3:latest=phi3"]);
    // Nor by an update: an alias that is the victim's id is left out.
    let secret = secret_of(&r);
    let r = join_with(
        addr,
        &code,
        json!({"id": "attacker", "nickname": "a", "model": "x", "endpoint": squatter.url()}),
    )
    .await;
    let attacker = secret_of(&r);
    let r = update(
        addr,
        &code,
        "attacker",
        Some(&attacker),
        json!({"models": [{"name": "x", "aliases": ["VICTIM"]}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["dropped"][0]["name"], "VICTIM=x");
    assert_eq!(chat(addr, &code, "victim").await.status, 200);
    assert_eq!(victim.requests().len(), 1);
    // So the victim can always re-join its id.
    let r = join_with(
        addr,
        &code,
        json!({"id": "victim", "nickname": "v", "endpoint": victim.url(),
               "models": ["phi3"], "participantSecret": secret}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    hub.shutdown().await;
}

#[tokio::test]
async fn an_update_is_a_sign_of_life() {
    let hub = start(gambiarra::HubConfig {
        participant_timeout: std::time::Duration::from_millis(300),
        health_interval: std::time::Duration::from_millis(50),
        ..gambiarra::HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let code = room_code(addr, "alive").await;
    let r = join_with(
        addr,
        &code,
        json!({"id": "p", "nickname": "p", "model": "m", "endpoint": "http://192.0.2.1:1"}),
    )
    .await;
    let secret = secret_of(&r);
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    assert_eq!(
        sse.until("participant:offline").await.data["participantId"],
        "p"
    );
    let r = update(
        addr,
        &code,
        "p",
        Some(&secret),
        json!({"models": ["m", "n"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(r.json()["participant"]["status"], "online");
    assert_eq!(
        sse.until("participant:online").await.data["participantId"],
        "p"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn the_catalogue_lists_each_model_once() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "catalogue").await;
    for (id, models) in [
        (
            "ollama",
            json!([{"name": "llama3:latest", "loaded": true}, "phi3"]),
        ),
        (
            "studio",
            json!([{"name": "meta-llama-3-8b-instruct", "aliases": ["llama3"]}]),
        ),
    ] {
        let r = join_with(
            addr,
            &code,
            json!({"id": id, "nickname": id, "endpoint": "http://192.0.2.1:1", "models": models}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.error());
    }
    let r = req(addr, "GET", &format!("/rooms/{code}/v1/models"), None).await;
    let data = r.json()["data"].as_array().unwrap().clone();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "llama3:latest",
            "phi3",
            "meta-llama-3-8b-instruct",
            "ollama",
            "studio"
        ]
    );
    assert_eq!(
        data[0]["gambiarra"],
        json!({"names": ["llama3:latest", "llama3"],
               "participants": {"online": 2, "busy": 0, "loaded": 1}})
    );
    let r = req(addr, "GET", &format!("/rooms/{code}/models"), None).await;
    assert_eq!(r.status, 200);
    let llama = &r.json()["models"][0];
    assert_eq!(llama["participants"][0]["participantId"], "ollama");
    assert_eq!(llama["participants"][0]["loaded"], true);
    assert_eq!(
        llama["participants"][1]["model"],
        "meta-llama-3-8b-instruct"
    );
    assert_eq!(llama["participants"][1]["status"], "online");
    hub.shutdown().await;
}

#[tokio::test]
async fn the_model_list_counts_against_the_control_rate() {
    let hub = start(gambiarra::HubConfig {
        control_rate: 0.1,
        control_burst: 3,
        ..gambiarra::HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let code = room_code(addr, "rate").await;
    let mock = quick_mock().await;
    let r = join(addr, &code, "p", &mock.url()).await;
    assert_eq!(r.status, 201);
    // Room creation and the join took two of the burst of three.
    let path = format!("/rooms/{code}/v1/models");
    assert_eq!(req(addr, "GET", &path, None).await.status, 200);
    let r = req(addr, "GET", &path, None).await;
    assert_eq!(r.status, 429, "{}", r.error());
    assert!(r.header("retry-after").is_some());
    // Proxied requests are the product: not counted.
    for _ in 0..5 {
        assert_eq!(chat(addr, &code, "llama3").await.status, 200);
    }
    hub.shutdown().await;
}
