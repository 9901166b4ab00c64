//! Client keys: authentication, per-key limits and priorities, and the global limit.

mod support;

use adpa_gateway::keys::{hash_of, new_secret};
use adpa_testkit::start_gateway;
use support::*;

async fn chat_as(addr: std::net::SocketAddr, key: Option<&str>) -> Reply {
    let authorization = key.map(|key| format!("Bearer {key}"));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    chat_with_headers(addr, chat_body("chat", false), &headers).await
}

#[tokio::test]
async fn keys_are_required_once_configured() {
    let upstream = sim("only", vec![]).await;
    let (secret, hash) = new_secret();
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n[[keys]]\nname = \"team\"\nhash = \"{hash}\"\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let missing = chat_as(gateway.addr(), None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["code"], "invalid_api_key");
    assert_eq!(
        chat_as(gateway.addr(), Some("sk-adpa-not-a-key"))
            .await
            .status,
        401
    );
    assert_eq!(chat_as(gateway.addr(), Some(&secret)).await.status, 200);
    assert_eq!(upstream.stats().requests, 1);
}

#[tokio::test]
async fn key_limit_names_the_key() {
    let upstream = sim("only", vec![]).await;
    let (limited, limited_hash) = new_secret();
    let (free, free_hash) = new_secret();
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n\
         [[keys]]\nname = \"small\"\nhash = \"{limited_hash}\"\n[keys.rate_limit]\nrequests_per_second = 0.1\nburst_size = 1\n\
         [[keys]]\nname = \"big\"\nhash = \"{free_hash}\"\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();

    assert_eq!(chat_as(gateway.addr(), Some(&limited)).await.status, 200);
    let rejected = chat_as(gateway.addr(), Some(&limited)).await;
    assert_eq!(rejected.status, 429);
    assert!(rejected.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("key small"));
    assert_eq!(rejected.header("retry-after"), Some("10"));
    // Another key is not affected.
    assert_eq!(chat_as(gateway.addr(), Some(&free)).await.status, 200);
}

#[tokio::test]
async fn global_limit_covers_every_route() {
    let upstream = sim("only", vec![]).await;
    let config = format!(
        "[server.rate_limit]\nrequests_per_second = 0.1\nburst_size = 2\n{}[routes.chat]\nprimary = \"only\"\n[routes.other]\nprimary = \"only\"\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();

    assert_eq!(chat(gateway.addr(), "chat").await.status, 200);
    assert_eq!(chat(gateway.addr(), "other").await.status, 200);
    let rejected = chat(gateway.addr(), "chat").await;
    assert_eq!(rejected.status, 429);
    assert!(rejected.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gateway"));
}

#[tokio::test]
async fn bad_key_hash_is_named() {
    let upstream = sim("only", vec![]).await;
    let config = format!(
        "{}[[keys]]\nname = \"team\"\nhash = \"{}\"\n",
        provider("only", &upstream),
        hash_of("x").replace("sha256:", "md5:")
    );
    let err = start_gateway(&config).await.map(|_| ()).unwrap_err();
    assert!(err.contains("keys[0].hash"), "{err}");
}

#[tokio::test]
async fn key_is_checked_before_anything_else() {
    let upstream = sim("only", vec![]).await;
    let (secret, hash) = new_secret();
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n[[keys]]\nname = \"team\"\nhash = \"{hash}\"\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();

    // Without a key even a malformed body or the model list gets a 401.
    let malformed = request(gateway.addr(), "POST", "/v1/chat/completions", "{").await;
    assert_eq!(malformed.status, 401);
    assert_eq!(
        request(gateway.addr(), "GET", "/v1/models", "")
            .await
            .status,
        401
    );

    // The scheme name is case-insensitive.
    let lowercase = format!("bearer {secret}");
    let reply = chat_with_headers(
        gateway.addr(),
        chat_body("chat", false),
        &[("authorization", &lowercase)],
    )
    .await;
    assert_eq!(reply.status, 200);
}

async fn chat_timed(
    addr: std::net::SocketAddr,
    key: String,
    priority: Option<&'static str>,
) -> (u16, std::time::Instant) {
    let authorization = format!("Bearer {key}");
    let mut headers = vec![("authorization", authorization.as_str())];
    headers.extend(priority.map(|value| ("x-adpa-priority", value)));
    let reply = chat_with_headers(addr, chat_body("chat", false), &headers).await;
    (reply.status, std::time::Instant::now())
}

#[tokio::test]
async fn key_priority_orders_the_concurrency_queue() {
    use std::time::Duration;

    use adpa_testkit::sim::{FaultScript, Latency, SimHandle};

    let script = FaultScript {
        latency: Latency {
            fixed: Duration::from_millis(200),
            ..Latency::default()
        },
        ..FaultScript::default()
    };
    let upstream = SimHandle::start_local("slow", script).await.unwrap();
    let (batch, batch_hash) = new_secret();
    let (interactive, interactive_hash) = new_secret();
    let config = format!(
        "{}[routes.chat]\nprimary = \"slow\"\n\
         [routes.chat.concurrency]\nmax_concurrent = 1\nqueue_size = 10\n\
         [[keys]]\nname = \"batch\"\nhash = \"{batch_hash}\"\npriority = \"low\"\n\
         [[keys]]\nname = \"interactive\"\nhash = \"{interactive_hash}\"\npriority = \"high\"\n",
        provider("slow", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let addr = gateway.addr();

    let holder = tokio::spawn(chat_timed(addr, batch.clone(), None));
    assert!(eventually(Duration::from_secs(2), || upstream.stats().requests == 1).await);

    // The batch key requests high priority, but its key does not allow the header: it
    // stays low, and the interactive key, queued after it, goes first.
    let queued_batch = tokio::spawn(chat_timed(addr, batch, Some("high")));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let queued_interactive = tokio::spawn(chat_timed(addr, interactive, None));

    let (holder_status, _) = holder.await.unwrap();
    let (batch_status, batch_done) = queued_batch.await.unwrap();
    let (interactive_status, interactive_done) = queued_interactive.await.unwrap();
    assert_eq!(
        (holder_status, batch_status, interactive_status),
        (200, 200, 200)
    );
    assert!(
        interactive_done < batch_done,
        "the interactive key's request finished after the batch key's"
    );
}
