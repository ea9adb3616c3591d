//! The `promptbook` command line.

mod check;
mod diff;
mod files;
mod inputs;
mod lock;
mod new;
mod print;
#[cfg(feature = "dispatch")]
mod send;
#[cfg(feature = "server")]
mod serve;
mod show;
#[cfg(any(feature = "dispatch", feature = "server"))]
mod signals;
mod testing;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use promptbook::{Registry, RenderOptions, Severity};

use files::{
    COUNTED_FILE_BYTES, TEMPLATE_FILE_BYTES, read_regular_file, read_stdin, write_new_file,
};
use inputs::read_inputs;
use print::{plural, print_messages, print_table};

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
pub(crate) struct InputArgs {
    /// Inputs as a JSON (or, for `.yaml`/`.yml`, YAML) file; `-` reads JSON from stdin.
    #[arg(long, value_name = "FILE|-")]
    pub(crate) input: Option<String>,
    /// Set one input: `k=v` (converted by the parameter's type: a string,
    /// unless it is declared a number, boolean, array or object), `k:=JSON`
    /// a JSON value, `k@=FILE` an image, file or audio read from FILE
    /// (inline, its media type from its first bytes). Wins over --input.
    #[arg(long = "var", value_name = "K=V")]
    pub(crate) vars: Vec<String>,
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
    /// Show one template version: labels, hash, path, schema, model, what
    /// it includes and what uses it.
    Show {
        /// `NAME`, `NAME@REQ` or `NAME@LABEL`.
        reference: String,
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write `promptbook.lock` (every version's content hash and where
    /// each label points), or check it.
    Lock {
        #[command(flatten)]
        dir: DirArg,
        /// Write nothing; exit non-zero when a released version changed
        /// without a new version, a label moved, or a version appeared or
        /// went without the lock being updated.
        #[arg(long)]
        check: bool,
    },
    /// Run the tests beside the templates (`NAME.tests.yaml`), offline.
    Test {
        /// Only the tests of these templates (`NAME`: every version;
        /// `NAME@REQ`, `NAME@LABEL`: that version).
        references: Vec<String>,
        #[command(flatten)]
        dir: DirArg,
        /// Write missing or changed snapshots instead of failing on them.
        #[arg(long)]
        update: bool,
        /// First send every test with `record: true` to its provider (keys
        /// from the environment) and store the answer as its cassette.
        #[arg(long)]
        record: bool,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Render two references on the same inputs and show what changes for
    /// the model: a message-level diff with token deltas.
    Diff {
        /// The old reference (`NAME@=2.0.0`, `NAME@production`, ...).
        old: String,
        /// The new reference.
        new: String,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        inputs: InputArgs,
        /// Render on the inputs of every test of either template.
        #[arg(long)]
        tests: bool,
        /// Count tokens for this model (default: the new template's).
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Exit 1 when the renders differ, as `git diff --exit-code` does.
        #[arg(long)]
        exit_code: bool,
    },
    /// Check that minor and patch releases keep their contract: inputs no
    /// stricter than the version before, released versions unchanged.
    Check {
        #[command(flatten)]
        dir: DirArg,
        /// Compare each version with the one before it (required: the only
        /// check so far).
        #[arg(long, required = true)]
        semver: bool,
        /// Also take the versions at this git revision (`origin/main`) as
        /// the versions before.
        #[arg(long, value_name = "REV")]
        against: Option<String>,
    },
    /// Write a starter template and its test file; never overwrites.
    New {
        /// The template name (`support/refunds`).
        name: String,
        #[command(flatten)]
        dir: DirArg,
        /// The file form.
        #[arg(long, value_enum, default_value = "jinja")]
        form: new::Form,
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
        #[arg(long, value_name = "SECONDS", value_parser = serve::positive_seconds)]
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
    } else {
        // Without it, the warnings a deployment must see still show: the
        // shared state (Redis) being away, and what calls do meanwhile.
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let only = tracing_subscriber::filter::Targets::new().with_target(
            "promptbook.state",
            tracing_subscriber::filter::LevelFilter::WARN,
        );
        tracing_subscriber::registry()
            .with(tracing_subscriber::Layer::with_filter(
                tracing_subscriber::fmt::layer().with_writer(io::stderr),
                only,
            ))
            .init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Prints an error and what caused it; exit code 1, or 0 when stdout was
/// closed early (`promptbook show x | head`), which is the reader's choice.
fn report(e: &anyhow::Error) -> ExitCode {
    // The write may fail inside serde_json (`--json`), which wraps it.
    if e.chain().any(|c| {
        c.downcast_ref::<io::Error>().map(io::Error::kind) == Some(io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(io::ErrorKind::BrokenPipe)
    }) {
        return ExitCode::SUCCESS;
    }
    // The library's errors already carry their context; anyhow adds ours
    // on top. Print the chain, outermost first.
    let mut msg = format!("error: {e}");
    for cause in e.chain().skip(1) {
        msg.push_str(&format!("\n  caused by: {cause}"));
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
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
            // The tests beside the templates are checked too (unknown
            // keys, inputs that break the schema, a test file without its
            // template), against what loads.
            if let Ok(registry) = Registry::load_with(&dir.dir, &promptbook::LoadOptions::isolate())
            {
                for problem in promptbook::suite::Suite::load(&registry).problems() {
                    writeln!(out, "{problem}")?;
                    errors += 1;
                }
            }
            // providers.yaml, as `send` and `serve` would read it
            // (unknown keys, a provider named like the reserved `state`,
            // shared-state settings).
            #[cfg(feature = "dispatch")]
            if dir.dir.join("providers.yaml").is_file()
                && let Err(e) = promptbook::dispatch::ClientBuilder::new()
                    .template_root(&dir.dir)
                    .and_then(promptbook::dispatch::ClientBuilder::build)
            {
                writeln!(out, "error: {}", e.message())?;
                errors += 1;
            }
            // The summary goes to stderr after every line of stdout.
            out.flush()?;
            drop(out);
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
            return serve::serve(&dir.dir, addr, allow_remote, options);
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
            return send::send(&dir.dir, &reference, &inputs, model, stream, json);
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
        Command::Show {
            reference,
            dir,
            json,
        } => {
            let registry = load_isolated(&dir.dir)?;
            return show::show(&registry, &reference, json);
        }
        Command::Lock { dir, check } => return lock::lock(&dir.dir, check),
        Command::Test {
            references,
            dir,
            update,
            record,
            json,
        } => return testing::test(&dir.dir, &references, update, record, json),
        Command::Diff {
            old,
            new,
            dir,
            inputs,
            tests,
            model,
            json,
            exit_code,
        } => {
            // As `git diff --exit-code`: 1 is "they differ", so an error
            // that stops the comparison is 2.
            let compared = diff::diff(
                &dir.dir,
                diff::DiffArgs {
                    old: &old,
                    new: &new,
                    inputs: &inputs,
                    tests,
                    model,
                    json,
                    exit_code,
                },
            );
            return Ok(compared.unwrap_or_else(|e| {
                report(&e);
                ExitCode::from(2)
            }));
        }
        Command::Check {
            dir,
            semver: _,
            against,
        } => return check::check_semver(&dir.dir, against.as_deref()),
        Command::New { name, dir, form } => return new::new(&dir.dir, &name, form),
        Command::Schema => {
            let mut out = io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &promptbook::template_file_schema())?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads a root for the commands that use what loads (`list`, `render`,
/// `send`): templates that do not load are left out, with everything that
/// includes them, and what was left out and why goes to stderr.
pub(crate) fn load_isolated(dir: &std::path::Path) -> Result<Registry> {
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

/// OTLP exporters from the standard environment variables, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see `promptbook::telemetry`).
#[cfg(feature = "otel")]
fn telemetry() -> Result<Option<promptbook::telemetry::Telemetry>> {
    promptbook::telemetry::Telemetry::from_env().map_err(anyhow::Error::msg)
}
