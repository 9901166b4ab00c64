//! Model fallback: weights, context windows, capabilities and minimum quality.

mod support;

use adpa_testkit::sim::{Fault, FaultKind};
use adpa_testkit::start_gateway;
use serde_json::json;
use support::*;

const CONTEXT_LENGTH_BODY: &str = r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;

fn context_length_for(model: &str) -> Fault {
    Fault {
        model: Some(model.to_owned()),
        ..Fault::always(FaultKind::Status {
            status: 400,
            retry_after: None,
            retry_after_ms: None,
            body: Some(CONTEXT_LENGTH_BODY.to_owned()),
        })
    }
}

fn three_model_config(upstream: &adpa_testkit::sim::SimHandle, extra: &str) -> String {
    format!(
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4\", \"gpt-3.5-turbo\", \"llama2\"]\n\
         [routes.chat]\nprimary = \"openai\"\n\
         models = [[\"gpt-4\", 1.0], [\"gpt-3.5-turbo\", 0.8], [\"llama2\", 0.6]]\n{extra}",
        upstream.base_url()
    )
}

async fn chat_with(
    addr: std::net::SocketAddr,
    body: serde_json::Value,
    headers: &[(&str, &str)],
) -> Reply {
    chat_with_headers(addr, body.to_string(), headers).await
}

fn hello() -> serde_json::Value {
    json!({"model": "chat", "messages": [{"role": "user", "content": "Hello"}]})
}

#[tokio::test]
async fn context_length_error_moves_to_next_model() {
    let upstream = sim("openai", vec![context_length_for("gpt-4")]).await;
    let gateway = start_gateway(&three_model_config(&upstream, ""))
        .await
        .unwrap();

    for stream in [false, true] {
        let reply = if stream {
            chat_stream(gateway.addr(), "chat").await
        } else {
            chat(gateway.addr(), "chat").await
        };
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-adpa-model"), Some("gpt-3.5-turbo"));
        assert_eq!(reply.header("x-adpa-attempts"), Some("2"));
    }

    // The context-length error is not retried on gpt-4.
    let models: Vec<_> = upstream
        .stats()
        .log
        .iter()
        .map(|r| r.model.clone())
        .collect();
    assert_eq!(models, ["gpt-4", "gpt-3.5-turbo", "gpt-4", "gpt-3.5-turbo"]);
}

#[tokio::test]
async fn min_quality_forbids_fallback() {
    let upstream = sim("openai", vec![context_length_for("gpt-4")]).await;
    let gateway = start_gateway(&three_model_config(&upstream, ""))
        .await
        .unwrap();

    let reply = chat_with(gateway.addr(), hello(), &[("x-adpa-min-quality", "0.9")]).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "context_length_exceeded");
    assert_eq!(error["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(error["attempts"][0]["target"], "openai/gpt-4");
    assert_eq!(error["attempts"][0]["class"], "context_length");
    let skipped: Vec<_> = error["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].clone())
        .collect();
    assert_eq!(
        skipped,
        [json!("below_min_quality"), json!("below_min_quality")]
    );
    assert_eq!(upstream.stats().requests, 1);

    let bad = chat_with(gateway.addr(), hello(), &[("x-adpa-min-quality", "high")]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "invalid_header");
}

#[tokio::test]
async fn min_quality_above_every_model_is_rejected() {
    let upstream = sim("openai", vec![]).await;
    let gateway = start_gateway(&three_model_config(&upstream, ""))
        .await
        .unwrap();

    let reply = chat_with(gateway.addr(), hello(), &[("x-adpa-min-quality", "1.0")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-adpa-model"), Some("gpt-4"));

    let config = three_model_config(&upstream, "").replace("[\"gpt-4\", 1.0]", "[\"gpt-4\", 0.95]");
    let gateway = start_gateway(&config).await.unwrap();
    let reply = chat_with(gateway.addr(), hello(), &[("x-adpa-min-quality", "0.99")]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "no_eligible_target");
    assert_eq!(reply.header("x-adpa-attempts"), Some("0"));
}

#[tokio::test]
async fn small_context_window_is_skipped() {
    let upstream = sim("openai", vec![]).await;
    let config = format!(
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"small\", \"large\"]\n\
         [routes.chat]\nprimary = \"openai\"\n\
         models = [{{ name = \"small\", weight = 1.0, context_window = 50 }}, {{ name = \"large\", weight = 0.5, context_window = 100000 }}]\n",
        upstream.base_url()
    );
    let gateway = start_gateway(&config).await.unwrap();

    let short = chat(gateway.addr(), "chat").await;
    assert_eq!(short.header("x-adpa-model"), Some("small"));

    let long =
        json!({"model": "chat", "messages": [{"role": "user", "content": "word ".repeat(100)}]});
    let reply = chat_with(gateway.addr(), long, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-adpa-model"), Some("large"));
    assert_eq!(reply.header("x-adpa-attempts"), Some("1"));
    assert_eq!(upstream.stats().requests, 2);
}

#[tokio::test]
async fn tools_request_skips_models_without_tools() {
    let upstream = sim("openai", vec![]).await;
    let config = format!(
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"fast\", \"smart\"]\n\
         [routes.chat]\nprimary = \"openai\"\n\
         models = [{{ name = \"fast\", weight = 1.0, tools = false }}, {{ name = \"smart\", weight = 0.9, tools = true }}]\n",
        upstream.base_url()
    );
    let gateway = start_gateway(&config).await.unwrap();

    let with_tools = json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "What is the weather?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    });
    let reply = chat_with(gateway.addr(), with_tools, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-adpa-model"), Some("smart"));
    assert_eq!(reply.header("x-adpa-attempts"), Some("1"));

    let plain = chat(gateway.addr(), "chat").await;
    assert_eq!(plain.header("x-adpa-model"), Some("fast"));
}

#[tokio::test]
async fn content_filter_is_returned_unless_opted_in() {
    let refusal = Fault::always(FaultKind::Status {
        status: 400,
        retry_after: None,
        retry_after_ms: None,
        body: Some(r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#.to_owned()),
    });
    let primary = sim("primary", vec![refusal]).await;
    let secondary = sim("secondary", vec![]).await;
    let route = "[routes.chat]\nprimary = \"primary\"\nsecondaries = [\"secondary\"]\n";
    let providers = format!(
        "{}{}",
        provider("primary", &primary),
        provider("secondary", &secondary)
    );

    let gateway = start_gateway(&format!("{providers}{route}")).await.unwrap();
    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "content_filter");
    assert_eq!(secondary.stats().requests, 0);

    let opted_in = format!("{providers}{route}failover_on_content_filter = true\n");
    let gateway = start_gateway(&opted_in).await.unwrap();
    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-adpa-provider"), Some("secondary"));
}

#[tokio::test]
async fn provider_first_order_keeps_provider() {
    let first = sim("first", vec![context_length_for("big")]).await;
    let second = sim("second", vec![]).await;
    let providers = format!(
        "[providers.first]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"big\", \"small\"]\n\
         [providers.second]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"big\", \"small\"]\n",
        first.base_url(),
        second.base_url()
    );
    let route = "[routes.chat]\nprimary = \"first\"\nsecondaries = [\"second\"]\nmodels = [[\"big\", 1.0], [\"small\", 0.5]]\n";

    // Model first: after `big` is too long at `first`, `big` is not tried at `second`
    // either, and `small` at `first` serves.
    let gateway = start_gateway(&format!("{providers}{route}")).await.unwrap();
    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.header("x-adpa-provider"), Some("first"));
    assert_eq!(reply.header("x-adpa-model"), Some("small"));
    assert_eq!(second.stats().requests, 0);

    let gateway = start_gateway(&format!("{providers}{route}order = \"provider_first\"\n"))
        .await
        .unwrap();
    let plain_second = chat(gateway.addr(), "chat").await;
    assert_eq!(plain_second.header("x-adpa-provider"), Some("first"));
    assert_eq!(plain_second.header("x-adpa-model"), Some("small"));
    let explain = gateway.engine().explain("chat").unwrap();
    let order: Vec<_> = explain
        .lines()
        .skip(1)
        .take(4)
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        ["first/big", "first/small", "second/big", "second/small"]
    );
}

#[tokio::test]
async fn check_warns_about_capability_gaps() {
    let upstream = sim("openai", vec![]).await;
    let config = format!(
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"a\", \"b\"]\n\
         [routes.chat]\nprimary = \"openai\"\n\
         models = [{{ name = \"a\", weight = 1.0 }}, {{ name = \"b\", weight = 0.5, tools = false }}]\n\
         [routes.plain]\nprimary = \"openai\"\n\
         models = [{{ name = \"a\", weight = 1.0, tools = false }}, {{ name = \"b\", weight = 0.5, tools = false }}]\n",
        upstream.base_url()
    );
    let gateway = start_gateway(&config).await.unwrap();
    let warnings: Vec<String> = gateway
        .engine()
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("routes.chat.models") && w.contains("only `a` supports tools")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("routes.plain.models") && w.contains("no model supports tools")),
        "{warnings:?}"
    );
}
