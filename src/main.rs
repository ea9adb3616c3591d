//! The `promptbook` command line.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use promptbook::{Registry, RenderOptions, Rendered, Severity, Template};
use serde_json::{Map, Value};

/// Versioned prompt templates: list, lint and render them.
#[derive(Parser)]
#[command(name = "promptbook", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct DirArg {
    /// Template root.
    #[arg(
        long,
        env = "PROMPTBOOK_DIR",
        default_value = "templates",
        value_name = "DIR"
    )]
    dir: PathBuf,
}

#[derive(clap::Args)]
struct InputArgs {
    /// Inputs as a JSON (or, for `.yaml`/`.yml`, YAML) file; `-` reads JSON from stdin.
    #[arg(long, value_name = "FILE|-")]
    input: Option<String>,
    /// Set one input: `k=v` (converted by the parameter's type: a string,
    /// unless it is declared a number, boolean, array or object), `k:=JSON`
    /// a JSON value. Wins over --input.
    #[arg(long = "var", value_name = "K=V")]
    vars: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// List templates with their versions and labels.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every template; print each problem as `path:line:col: error|warning: message`.
    Lint {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Render a template to role-tagged messages.
    Render {
        /// `NAME`, `NAME@REQ` (`^2`, `~1.2`, `=1.0.0`) or `NAME@LABEL`.
        reference: String,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        inputs: InputArgs,
        /// Print the rendered result as JSON.
        #[arg(long)]
        json: bool,
        /// Render for this model instead of the template's (`name` or `provider:name`):
        /// sets the tokenizer and the context window.
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
    },
    /// Render a template and send it to its model; print the reply.
    #[cfg(feature = "dispatch")]
    Send {
        /// `NAME`, `NAME@REQ` or `NAME@LABEL`.
        reference: String,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        inputs: InputArgs,
        /// Send to this model instead of the template's (`provider:name`).
        #[arg(long, value_name = "PROVIDER:NAME")]
        model: Option<String>,
        /// Print the reply as it arrives.
        #[arg(long)]
        stream: bool,
        /// Print the normalised response as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert a Prompty file to a native `.prompt.jinja` template.
    Convert {
        /// The `.prompty` file.
        file: PathBuf,
        /// Where to write: a path, or `-` for stdout. Default: next to the
        /// input, as `STEM@VERSION.prompt.jinja`.
        #[arg(short, long, value_name = "FILE|-")]
        output: Option<PathBuf>,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Print the JSON Schema of template files.
    Schema,
    /// Serve the playground page and the JSON API, reloading templates as
    /// their files change.
    #[cfg(feature = "server")]
    Serve {
        #[command(flatten)]
        dir: DirArg,
        /// Address to listen on (`IP:PORT`; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "IP:PORT")]
        addr: std::net::SocketAddr,
        /// Allow a non-loopback `--addr`. The server has no authentication:
        /// anyone who can reach it can read every template.
        #[arg(long)]
        allow_remote: bool,
        /// Also answer to this `Host` name (repeatable). IP addresses and
        /// `localhost` always work; other names are refused, so that a web
        /// page cannot reach the server through DNS rebinding.
        #[arg(long = "allow-host", value_name = "NAME")]
        allow_hosts: Vec<String>,
        /// Renders running at once; more wait up to a second, then get 503.
        /// Default: the number of CPU cores.
        #[arg(long, value_name = "N")]
        max_renders: Option<usize>,
        /// Seconds a response may wait for its client to read any of it
        /// before the connection is closed. Default 10.
        #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
        write_timeout: Option<std::time::Duration>,
    },
    /// Count the tokens of a text (no chat overhead) and print the bare number.
    Tokens {
        /// Count with this model's tokenizer (approximate when it is not public).
        #[arg(long, value_name = "MODEL", conflicts_with = "encoding")]
        model: Option<String>,
        /// Count with this encoding: o200k_base (the default) or cl100k_base.
        #[arg(long, value_name = "ENCODING")]
        encoding: Option<promptbook::tokens::Encoding>,
        /// The file to count; `-` or nothing reads stdin.
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `PROMPTBOOK_LOG=debug` (or info, warn, trace) shows the library's
    // tracing events on stderr.
    if let Some(level) = std::env::var("PROMPTBOOK_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
    {
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(io::stderr)
            .init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The library's errors already carry their context; anyhow adds
            // ours on top. Print the chain, outermost first.
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!("\n  caused by: {cause}"));
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::List { dir, json } => {
            let registry = load_isolated(&dir.dir)?;
            let mut out = io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &registry)?;
                writeln!(out)?;
            } else {
                print_table(&mut out, &registry)?;
            }
        }
        Command::Lint { dir } => {
            let diagnostics = promptbook::lint(&dir.dir)?;
            let mut out = io::stdout().lock();
            let mut errors = 0;
            for d in &diagnostics {
                writeln!(out, "{d}")?;
                if d.severity() == Severity::Error {
                    errors += 1;
                }
            }
            let warnings = diagnostics.len() - errors;
            eprintln!(
                "{errors} error{}, {warnings} warning{}",
                plural(errors),
                plural(warnings)
            );
            if errors > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Render {
            reference,
            dir,
            inputs,
            json,
            model,
        } => {
            let registry = load_isolated(&dir.dir)?;
            let template = registry.get(&reference)?;
            let inputs = read_inputs(inputs.input.as_deref(), &inputs.vars, Some(template))?;
            let mut options = RenderOptions::new();
            if let Some(model) = model {
                options = options.model(model);
            }
            let rendered = registry.render_with(&reference, &inputs, &options)?;
            let mut out = io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rendered)?;
                writeln!(out)?;
            } else {
                print_messages(&mut out, &rendered)?;
            }
        }
        Command::Tokens {
            model,
            encoding,
            file,
        } => {
            let text = match file.as_deref() {
                None => read_stdin()?,
                Some(p) if p.as_os_str() == "-" => read_stdin()?,
                Some(p) => read_regular_file(p, COUNTED_FILE_BYTES)?,
            };
            let n = match (model, encoding) {
                (Some(model), _) => match promptbook::tokens::model_info(&model).encoding {
                    Some(encoding) => encoding.count(&text),
                    None => promptbook::tokens::counter_for_model(Some(&model)).count(&text),
                },
                (None, Some(encoding)) => encoding.count(&text),
                (None, None) => promptbook::tokens::Encoding::O200kBase.count(&text),
            };
            writeln!(io::stdout().lock(), "{n}")?;
        }
        #[cfg(feature = "server")]
        Command::Serve {
            dir,
            addr,
            allow_remote,
            allow_hosts,
            max_renders,
            write_timeout,
        } => {
            let mut options = promptbook::server::Options::new();
            if let Some(after) = write_timeout {
                options = options.write_timeout(after);
            }
            for host in allow_hosts {
                options = options.allow_host(host);
            }
            if let Some(n) = max_renders {
                options = options.max_renders(n);
            }
            return serve(&dir.dir, addr, allow_remote, options);
        }
        #[cfg(feature = "dispatch")]
        Command::Send {
            reference,
            dir,
            inputs,
            model,
            stream,
            json,
        } => {
            return send(&dir.dir, &reference, &inputs, model, stream, json);
        }
        Command::Convert {
            file,
            output,
            force,
        } => {
            let text = read_regular_file(&file, TEMPLATE_FILE_BYTES)?;
            let converted = promptbook::convert_prompty(&text)
                .with_context(|| format!("cannot convert {}", file.display()))?;
            for w in &converted.warnings {
                eprintln!("warning: {}: {w}", file.display());
            }
            let target = output.unwrap_or_else(|| {
                let stem = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(|n| n.strip_suffix(".prompty").unwrap_or(n))
                    .unwrap_or("converted");
                let stem = stem.split_once('@').map_or(stem, |(s, _)| s);
                file.with_file_name(format!("{stem}@{}.prompt.jinja", converted.version))
            });
            if target.as_os_str() == "-" {
                io::stdout().lock().write_all(converted.text.as_bytes())?;
            } else {
                write_new_file(&target, converted.text.as_bytes(), force)?;
                eprintln!(
                    "wrote {}; remove {} once you have checked it (both define the same template)",
                    target.display(),
                    file.display()
                );
            }
        }
        Command::Schema => {
            let mut out = io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &promptbook::template_file_schema())?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "server")]
fn serve(
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
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(feature = "dispatch")]
fn send(
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
    let client = ClientBuilder::new().template_root(dir)?.build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let response = runtime.block_on(async {
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
                }
                StreamEvent::Done(r) => done = Some(r),
                _ => {}
            }
        }
        Ok(done)
    })?;
    let response = response.context("the stream ended without an answer")?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &response)?;
        writeln!(out)?;
    } else {
        if !stream {
            write!(out, "{}", response.text)?;
        }
        if !response.text.is_empty() && !response.text.ends_with('\n') {
            writeln!(out)?;
        }
        for call in &response.tool_calls {
            writeln!(
                out,
                "tool call {} {}({})",
                call.id, call.name, call.arguments
            )?;
        }
    }
    let usage = response
        .usage
        .map(|u| format!(", {} in / {} out tokens", u.input_tokens, u.output_tokens))
        .unwrap_or_default();
    eprintln!(
        "# {}:{}{}{}",
        response.provider,
        response.model,
        if response.fallback { " (fallback)" } else { "" },
        usage
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to `target` without following a link there: a new file
/// is created exclusively (`O_EXCL`: a symlink at `target`, even a dangling
/// one, makes it fail rather than write through it). With `force`, the
/// text goes to a new file beside `target` first and is renamed over it,
/// which replaces a link rather than its target, and never leaves a
/// half-written file.
fn write_new_file(target: &std::path::Path, bytes: &[u8], force: bool) -> Result<()> {
    let create = |path: &std::path::Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    if !force {
        let mut file = create(target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} exists (or is a link); pass --force to replace it",
                target.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot create {}", target.display())),
        })?;
        return file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", target.display()));
    }
    // Replace a file or a link, never a device, FIFO or directory (a
    // rename over `/dev/null` would replace the device itself).
    if let Ok(meta) = std::fs::symlink_metadata(target)
        && !meta.is_file()
        && !meta.file_type().is_symlink()
    {
        bail!(
            "{} is not a regular file (a directory, FIFO or device); --force replaces files and links only",
            target.display()
        );
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temp, target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(anyhow::Error::new(e).context(format!("cannot write {}", target.display())));
    }
    Ok(())
}

/// The largest `.prompty` file `convert` reads: the loader's cap.
const TEMPLATE_FILE_BYTES: u64 = 8 << 20;
/// The largest file `tokens` counts.
const COUNTED_FILE_BYTES: u64 = 256 << 20;
/// The largest `--input` file.
const INPUT_FILE_BYTES: u64 = 64 << 20;

/// Reads a regular file of at most `max` bytes as UTF-8 text. A FIFO, a
/// device (`/dev/zero`, even behind a link) or a directory is refused
/// before it is opened, so nothing blocks or reads without end.
fn read_regular_file(path: &std::path::Path, max: u64) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (a directory, FIFO or device); give a file",
            path.display()
        );
    }
    if meta.len() > max {
        bail!("{} is over {max} bytes", path.display());
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{} is over {max} bytes", path.display());
    }
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    io::stdin()
        .read_to_string(&mut s)
        .context("cannot read stdin (is it UTF-8 text?)")?;
    Ok(s)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Loads a root for the commands that use what loads (`list`, `render`,
/// `send`): templates that do not load are left out, with everything that
/// includes them, and what was left out and why goes to stderr.
fn load_isolated(dir: &std::path::Path) -> Result<Registry> {
    let registry = Registry::load_with(dir, &promptbook::LoadOptions::isolate())?;
    let warnings = registry.warnings();
    let problems: Vec<&promptbook::Diagnostic> = registry
        .diagnostics()
        .iter()
        .filter(|d| !warnings.contains(d))
        .collect();
    if !problems.is_empty() {
        eprintln!("warning: some templates did not load and are left out:");
        for d in problems {
            eprintln!("  {d}");
        }
    }
    Ok(registry)
}

/// The JSON types a parameter's schema allows: its `type`, or the types of
/// its `enum`/`const` values, or those of its `anyOf`/`oneOf` branches.
/// Empty when it does not say.
fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => return vec![t.as_str()],
        Some(Value::Array(ts)) => return ts.iter().filter_map(Value::as_str).collect(),
        _ => {}
    }
    let mut types: Vec<&str> = listed_values(schema)
        .iter()
        .map(|v| match v {
            Value::String(_) => "string",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Null => "null",
        })
        .collect();
    for key in ["anyOf", "oneOf"] {
        for branch in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            types.extend(schema_types(branch));
        }
    }
    types.sort_unstable();
    types.dedup();
    types
}

/// The values a schema lists: its `enum`, its `const`, and those of its
/// `anyOf`/`oneOf` branches.
fn listed_values(schema: &Value) -> Vec<&Value> {
    let mut out: Vec<&Value> = schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|e| e.iter().collect())
        .unwrap_or_default();
    out.extend(schema.get("const"));
    for key in ["anyOf", "oneOf"] {
        for branch in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(listed_values(branch));
        }
    }
    out
}

/// A `--var k=v` value, converted by the parameter's declared type: a
/// number for `integer` and `number`, `true`/`false` for `boolean`, JSON
/// for `array`, `object` and `null`; a string otherwise (or when the type
/// allows strings).
fn typed_var(template: Option<&Template>, key: &str, value: &str) -> Result<Value> {
    let schema = template.and_then(|t| t.input_schema().get("properties")?.get(key));
    let v = value.trim();
    // A value the schema lists (`enum`, `const`, in itself or in one of
    // its `anyOf`/`oneOf` branches), written as it prints: that value.
    if let Some(schema) = schema {
        let listed = listed_values(schema);
        if let Some(m) = listed.iter().find(|m| match m {
            Value::String(s) => s == value,
            other => other.to_string() == v,
        }) {
            return Ok((*m).clone());
        }
    }
    let types = schema.map(schema_types).unwrap_or_default();
    if types.is_empty() || types.contains(&"string") {
        return Ok(Value::String(value.to_owned()));
    }
    for t in &types {
        let parsed = match *t {
            // JSON Schema's integers include `2.0`.
            "integer" => v.parse::<i64>().ok().map(Value::from).or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| Value::from(f as i64))
            }),
            "number" => v
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            "boolean" => match v {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            "array" | "object" | "null" => serde_json::from_str::<Value>(v).ok().filter(|j| {
                j.is_array() && *t == "array"
                    || j.is_object() && *t == "object"
                    || j.is_null() && *t == "null"
            }),
            _ => None,
        };
        if let Some(parsed) = parsed {
            return Ok(parsed);
        }
    }
    bail!(
        "--var {key}={value}: `{key}` is {}; give a value of that type, or `--var {key}:=JSON`",
        types
            .iter()
            .map(|t| match *t {
                "integer" => "an integer",
                "number" => "a number",
                "boolean" => "a boolean (true or false)",
                "array" => "a JSON array",
                "object" => "a JSON object",
                other => other,
            })
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

/// Reads `--input` and applies `--var`s on top, converting `k=v` values by
/// the template's parameter types.
fn read_inputs(input: Option<&str>, vars: &[String], template: Option<&Template>) -> Result<Value> {
    let mut inputs = match input {
        None => Map::new(),
        Some(source) => {
            let (text, yaml) = if source == "-" {
                let mut s = String::new();
                io::stdin()
                    .read_to_string(&mut s)
                    .context("cannot read inputs from stdin")?;
                (s, false)
            } else {
                let text = read_regular_file(std::path::Path::new(source), INPUT_FILE_BYTES)
                    .with_context(|| format!("cannot read input file {source}"))?;
                (text, source.ends_with(".yaml") || source.ends_with(".yml"))
            };
            // A byte-order mark (Windows editors write one) is not content.
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            let value: Value = if yaml {
                serde_saphyr::from_str(text)
                    .map_err(|e| anyhow::anyhow!("{}", e.without_snippet()))
                    .with_context(|| format!("input file {source} is not valid YAML"))?
            } else {
                serde_json::from_str(text)
                    .with_context(|| format!("input {source} is not valid JSON"))?
            };
            match value {
                Value::Object(map) => map,
                Value::Null => Map::new(),
                _ => bail!("input {source} must hold a JSON object of parameter values"),
            }
        }
    };
    for var in vars {
        let Some((key, value)) = var.split_once('=') else {
            bail!("--var `{var}`: expected `k=v` (a string) or `k:=JSON`");
        };
        let (key, value) = match key.strip_suffix(':') {
            Some(key) => (
                key,
                serde_json::from_str(value)
                    .with_context(|| format!("--var `{var}`: the value after `:=` is not JSON"))?,
            ),
            None => (key, typed_var(template, key, value)?),
        };
        if key.is_empty() {
            bail!("--var `{var}`: empty parameter name");
        }
        inputs.insert(key.to_owned(), value);
    }
    Ok(Value::Object(inputs))
}

fn print_table(out: &mut impl Write, registry: &Registry) -> io::Result<()> {
    let rows: Vec<(String, String, String)> = registry
        .names()
        .map(|name| {
            let versions: Vec<&Template> = registry.versions(name).collect();
            let shown = versions
                .iter()
                .map(|t| {
                    if t.labels().is_empty() {
                        t.version().to_string()
                    } else {
                        format!("{} [{}]", t.version(), t.labels().join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let description = versions
                .last()
                .and_then(|t| t.description())
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            (name.to_owned(), shown, description)
        })
        .collect();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(4);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(8);
    writeln!(out, "{:w0$}  {:w1$}  DESCRIPTION", "NAME", "VERSIONS")?;
    for (name, versions, description) in rows {
        writeln!(out, "{name:w0$}  {versions:w1$}  {description}").map(|()| ())?;
    }
    Ok(())
}

fn print_messages(out: &mut impl Write, rendered: &Rendered) -> io::Result<()> {
    let tokens = &rendered.tokens;
    writeln!(
        out,
        "# {} | {}{} tokens ({})",
        rendered.template,
        if tokens.approximate { "~" } else { "" },
        tokens.total,
        tokens.encoding
    )?;
    if let Some(t) = &rendered.truncation {
        writeln!(
            out,
            "# dropped the {} oldest history message{} to fit a budget of {} tokens",
            t.dropped,
            plural(t.dropped),
            t.budget
        )?;
    }
    for d in &rendered.dropped_empty {
        writeln!(
            out,
            "# dropped an empty {} message (a role line whose text rendered empty)",
            d.role
        )?;
    }
    for (i, (m, origin)) in rendered.messages_with_origin().enumerate() {
        let mut head = format!("[{}", m.role);
        if let Some(name) = &m.name {
            head.push_str(&format!(" name={name}"));
        }
        head.push(']');
        if let promptbook::Origin::History { parameter } = origin {
            head.push_str(&format!(" (from {parameter})"));
        }
        if let Some(n) = tokens.messages.get(i) {
            head.push_str(&format!(" {n} tokens"));
        }
        writeln!(out)?;
        writeln!(out, "{head}")?;
        if !m.content.is_empty() {
            writeln!(out, "{}", m.content)?;
        }
        if let Some(calls) = &m.tool_calls {
            writeln!(out, "tool_calls: {}", Value::Array(calls.clone()))?;
        }
    }
    Ok(())
}

/// A positive number of seconds (fractions allowed), for `--write-timeout`.
#[cfg(feature = "server")]
fn positive_seconds(text: &str) -> Result<std::time::Duration, String> {
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
