//! `promptbook send`.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use promptbook::RenderOptions;

use crate::InputArgs;
use crate::inputs::read_inputs;
use crate::load_isolated;

pub(crate) fn send(
    dir: &std::path::Path,
    reference: &str,
    inputs: &InputArgs,
    model: Option<String>,
    stream: bool,
    json: bool,
) -> Result<ExitCode> {
    use futures_util::StreamExt;
    use promptbook::dispatch::{ClientBuilder, SendOptions, StreamEvent};

    let registry = load_isolated(dir)?;
    let template = registry.get(reference)?;
    let inputs = &read_inputs(inputs.input.as_deref(), &inputs.vars, Some(template))?;
    let mut render = RenderOptions::new();
    let mut send = SendOptions::new();
    if let Some(model) = model {
        render = render.model(model.clone());
        send = send.model(model);
    }
    let rendered = registry.render_with(reference, inputs, &render)?;
    // Spans and metrics of this call go out (and are flushed on every way
    // out) when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[cfg(feature = "otel")]
    let telemetry = crate::telemetry()?;
    let client = ClientBuilder::new().template_root(dir)?.build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut streamed_text = String::new();
    let call = async {
        if !stream {
            return client.send_with(&rendered, &send).await.map(Some);
        }
        let mut events = client.stream_with(&rendered, &send);
        let mut out = io::stdout();
        let mut done = None;
        while let Some(event) = events.next().await {
            match event? {
                StreamEvent::Text(text) if !json => {
                    // Shown as it comes; a closed pipe is the reader's choice.
                    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                    streamed_text.push_str(&text);
                }
                StreamEvent::Done(r) => done = Some(r),
                _ => {}
            }
        }
        Ok(done)
    };
    // Stopped midway (Ctrl-C, SIGTERM, SIGHUP): the call is given up, and
    // what it held (a `concurrent` slot in Redis) is given back before
    // the process exits.
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = call => Some(result),
            () = crate::signals::stopped() => None,
        }
    });
    let Some(response) = outcome else {
        runtime.block_on(client.close());
        eprintln!("interrupted: the call was given up");
        return Ok(ExitCode::from(130));
    };
    let response = response?;
    let response = response.context("the stream ended without an answer")?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &response)?;
        writeln!(out)?;
    } else {
        // What a stream showed as it came: its text (none in tool mode,
        // where the answer came as a tool call's arguments).
        let shown = if stream { streamed_text.as_str() } else { "" };
        if !shown.is_empty() && !shown.ends_with('\n') {
            writeln!(out)?;
        }
        match &response.output {
            // A validated JSON answer prints pretty, unless it streamed.
            Some(output) if shown.is_empty() => {
                writeln!(out, "{}", serde_json::to_string_pretty(output)?)?;
            }
            Some(_) => {}
            None if !stream => {
                write!(out, "{}", response.text)?;
                if !response.text.is_empty() && !response.text.ends_with('\n') {
                    writeln!(out)?;
                }
            }
            None => {}
        }
        for call in &response.tool_calls {
            writeln!(
                out,
                "tool call {} {}({})",
                call.id, call.name, call.arguments
            )?;
            if let Some(problem) = &call.problem {
                writeln!(out, "  invalid: {problem}")?;
            }
        }
    }
    let mut usage = response.usage.map(usage_line).unwrap_or_default();
    if let Some(cost) = response.cost {
        usage.push_str(&format!(", cost {cost:.6}"));
    }
    let circuits = if response.open_circuits.is_empty() {
        String::new()
    } else {
        format!(
            " (circuit open: {}, skipped)",
            response.open_circuits.join(", ")
        )
    };
    let repairs = match response.repairs {
        0 => String::new(),
        1 => ", 1 repair".to_owned(),
        n => format!(", {n} repairs"),
    };
    eprintln!(
        "# {}:{}{}{}{}{}",
        response.provider,
        response.model,
        if response.fallback { " (fallback)" } else { "" },
        circuits,
        usage,
        repairs
    );
    #[cfg(feature = "otel")]
    if let Some(Err(e)) = telemetry.map(promptbook::telemetry::Telemetry::shutdown) {
        eprintln!("warning: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `, 1200 in (1024 cached, 100 written to the cache) / 80 out (64
/// reasoning) tokens`: what the provider reported.
fn usage_line(u: promptbook::dispatch::Usage) -> String {
    let mut input = Vec::new();
    if let Some(n) = u.cache_read_input_tokens {
        input.push(format!("{n} cached"));
    }
    if let Some(n) = u.cache_creation_input_tokens.filter(|n| *n > 0) {
        input.push(format!("{n} written to the cache"));
    }
    let input = if input.is_empty() {
        String::new()
    } else {
        format!(" ({})", input.join(", "))
    };
    let reasoning = u
        .reasoning_tokens
        .map(|n| format!(" ({n} reasoning)"))
        .unwrap_or_default();
    format!(
        ", {} in{input} / {} out{reasoning} tokens",
        u.input_tokens, u.output_tokens
    )
}
