//! Rich requests on the wire: images, files and audio placed by templates
//! and carried by history, sent to a loopback fake of OpenAI and
//! Anthropic that records every request byte for byte.

#![cfg(feature = "dispatch")]

mod fake;

use std::fs;
use std::time::Duration;

use fake::{FakeProvider, Reply, fixture, recorded_body};
use promptbook::dispatch::{Client, RetryPolicy};
use promptbook::{Registry, Rendered};
use serde_json::{Value, json};

const KEY_ENV: &str = "PROMPTBOOK_TEST_KEY";

/// A 1x1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
/// The first bytes of a PDF.
const PDF: &str = "JVBERi0xLjQK";
/// A WAV header with no samples.
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";

fn template(model: &str) -> String {
    format!(
        "version: 1.0.0
parameters:
  photo: {{type: image}}
  invoice: {{type: file, default: null}}
  history: {{type: messages, default: []}}
model:
  name: {model}
  parameters: {{max_tokens: 20}}
messages:
  - role: system
    content: Describe what you are shown.
  - history: history
  - role: user
    content: |
      What is this?
      {{{{ photo }}}}
      {{% if invoice %}}
      And this:
      {{{{ invoice }}}}
      {{% endif %}}
"
    )
}

fn render(model: &str, inputs: Value) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("see.prompt.yaml"), template(model)).unwrap();
    let registry = Registry::load(dir.path()).unwrap();
    registry.render("see", &inputs).unwrap()
}

fn client(fake: &FakeProvider) -> Client {
    Client::builder()
        .provider("openai", fake.openai(KEY_ENV))
        .provider("anthropic", fake.anthropic(KEY_ENV))
        .retry(RetryPolicy::retries(0).backoff(Duration::from_millis(1), Duration::from_millis(1)))
        .build()
        .unwrap()
}

#[tokio::test]
async fn openai_gets_content_parts() {
    let fake = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json"))]);
    let rendered = render(
        "gpt-4o",
        json!({
            "photo": {"data": PNG, "media_type": "image/png", "detail": "low"},
            "invoice": {"data": PDF, "media_type": "application/pdf", "filename": "inv.pdf"},
            "history": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Listen:"},
                    {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}]},
                {"role": "assistant", "content": "Silence."}
            ]
        }),
    );
    client(&fake).send(&rendered).await.unwrap();
    let [request] = fake.requests().try_into().unwrap();
    assert_eq!(
        request.body["messages"],
        json!([
            {"role": "system", "content": "Describe what you are shown."},
            {"role": "user", "content": [
                {"type": "text", "text": "Listen:"},
                {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}]},
            {"role": "assistant", "content": "Silence."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}"), "detail": "low"}},
                {"type": "text", "text": "And this:"},
                {"type": "file", "file": {"filename": "inv.pdf", "file_data": format!("data:application/pdf;base64,{PDF}")}}]}
        ])
    );
}

#[tokio::test]
async fn anthropic_gets_image_and_document_blocks() {
    let fake = FakeProvider::start(vec![Reply::json(&recorded_body(
        "anthropic-recorded-text.json",
    ))]);
    let rendered = render(
        "claude-sonnet-4-5",
        json!({
            "photo": "https://example.com/cat.png",
            "invoice": format!("data:application/pdf;base64,{PDF}"),
            "history": [
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "text", "text": "Earlier picture."}]},
                {"role": "assistant", "content": "A dot."}
            ]
        }),
    );
    client(&fake).send(&rendered).await.unwrap();
    let [request] = fake.requests().try_into().unwrap();
    assert_eq!(request.body["system"], "Describe what you are shown.");
    assert_eq!(
        request.body["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "text", "text": "Earlier picture."}]},
            {"role": "assistant", "content": "A dot."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                {"type": "text", "text": "And this:"},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}]}
        ])
    );
}

/// A part the provider cannot take is refused before anything is sent,
/// naming the message and the part.
#[tokio::test]
async fn parts_a_provider_cannot_take_never_leave() {
    let fake = FakeProvider::start(vec![]);
    let audio = json!({
        "photo": "https://example.com/cat.png",
        "history": [{"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}]}]
    });
    let e = client(&fake)
        .send(&render("claude-sonnet-4-5", audio))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("message 2 (user) part 2 is audio"),
        "{e}"
    );
    let image_in_system = json!({
        "photo": "https://example.com/cat.png",
        "history": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/logo.png"}}]}]
    });
    for model in ["gpt-4o", "claude-sonnet-4-5"] {
        let e = client(&fake)
            .send(&render(model, image_in_system.clone()))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("message 2 (system) part 1 is an image"),
            "{model}: {e}"
        );
    }
    let file_url =
        json!({"photo": "https://example.com/cat.png", "invoice": "https://example.com/a.pdf"});
    let e = client(&fake)
        .send(&render("gpt-4o", file_url))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a URL to fetch"), "{e}");
    assert!(fake.requests().is_empty(), "nothing was sent");
}
