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
