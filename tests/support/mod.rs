//! A `promptbook serve` process for tests: started on a free loopback port,
//! killed when dropped.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(15);

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
}

impl Server {
    /// Runs `promptbook serve --dir DIR --addr 127.0.0.1:0` and waits (bounded)
    /// for the line that says where it listens.
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[], None)
    }

    /// [`start`](Server::start) with more arguments, and optionally under
    /// an open-file limit (`ulimit -n`).
    pub fn start_with(dir: &Path, args: &[&str], fd_limit: Option<u32>) -> Server {
        Server::start_env(dir, args, fd_limit, &[])
    }

    /// [`start_with`](Server::start_with) with environment variables set
    /// for the server (a provider's base URL and key); the key variables
    /// of the built-in providers are cleared unless set here.
    pub fn start_env(
        dir: &Path,
        args: &[&str],
        fd_limit: Option<u32>,
        env: &[(&str, &str)],
    ) -> Server {
        let bin = env!("CARGO_BIN_EXE_promptbook");
        let mut command = match fd_limit {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(["serve", "--addr", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .args(args)
            .env_remove("PROMPTBOOK_DIR")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_BASE_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start promptbook serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(line) if !line.is_empty() => line,
            other => {
                let _ = child.kill();
                let mut stderr = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("promptbook serve did not start ({other:?}): {stderr}");
            }
        };
        assert!(line.contains("(loopback only)"), "{line}");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Sends `request` (raw HTTP/1.1, `{addr}` replaced by the server's
    /// address) on a new connection and returns the status and the body.
    pub fn raw(&self, request: &str) -> (u16, String) {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(self.addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(request.replace("{addr}", self.addr()).as_bytes())
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }
}

/// Copies a directory tree.
/// Runs a command to its end: exit code (-1 for a signal), stdout, stderr.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Sends SIGTERM to process `pid` (how containers are stopped).
#[cfg(unix)]
pub fn terminate(pid: u32) {
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM {pid}");
}

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
