//! `promptbook serve`.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

pub(crate) fn serve(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    allow_remote: bool,
    options: promptbook::server::Options,
) -> Result<ExitCode> {
    if !addr.ip().is_loopback() && !allow_remote {
        bail!(
            "refusing to listen on {addr}: the dev server has no authentication. \
             Pass --allow-remote to expose it beyond this machine"
        );
    }
    let registry = promptbook::WatchedRegistry::watch_lenient(dir)?;
    let problems = registry.errors();
    if !problems.is_empty() {
        eprintln!(
            "warning: some templates did not load and are left out (served once their files \
             load; /api/status lists them):"
        );
        for d in problems {
            eprintln!("  {d}");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The playground's sends export spans and metrics when
    // OTEL_EXPORTER_OTLP_ENDPOINT is set; flushed when the server stops.
    #[cfg(feature = "otel")]
    let _telemetry = crate::telemetry()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let scope = if local.ip().is_loopback() {
            "loopback only"
        } else {
            "reachable from other machines"
        };
        {
            let mut out = io::stdout().lock();
            writeln!(
                out,
                "serving {} at http://{local}/ ({scope}); Ctrl-C stops",
                dir.display()
            )?;
            out.flush()?;
        }
        tokio::select! {
            served = promptbook::server::serve(listener, registry, options) => {
                served.context("the server stopped")?
            }
            // Ctrl-C, SIGTERM (how containers are stopped) or SIGHUP: stop,
            // flushing telemetry on the way out.
            _ = crate::signals::stopped() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A positive number of seconds (fractions allowed), for `--write-timeout`.
pub(crate) fn positive_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!(
            "`{text}`: give a number of seconds above 0, at most 86400"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}
