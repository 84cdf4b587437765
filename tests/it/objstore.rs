//! A real S3-compatible server for the tests: `moto_server` (PyPI
//! `moto[server]`), started once per test binary as its own process on
//! 127.0.0.1, with the bucket `pgstrata-test`. Each repository gets its own
//! prefix. Settings reach every pgstrata process (the server's
//! `archive_command` included) through the environment, set once here.
//!
//! A missing `moto_server` is a failure saying how to install it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "pgstrata-test";
pub const ACCESS_KEY: &str = "pgstrata-test-key";
pub const SECRET_KEY: &str = "pgstrata-test-secret";

pub struct Server {
    pub endpoint: String,
    /// The watcher of the server process (it ends with the test binary).
    _child: Mutex<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Start `moto_server` on `port`; it ends with the test binary (a watcher
/// shell kills it when its parent is gone).
pub fn spawn_moto(port: u16) -> Child {
    let script = format!(
        "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null",
        parent = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("start sh")
}

pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on 127.0.0.1:{port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Make a bucket with boto3 (installed with moto).
pub fn create_bucket(endpoint: &str, bucket: &str) {
    let py = format!(
        "import boto3; boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='{ACCESS_KEY}', \
         aws_secret_access_key='{SECRET_KEY}', region_name='us-east-1').create_bucket(Bucket='{bucket}')"
    );
    let o = Command::new("python3")
        .args(["-c", &py])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "cannot create bucket {bucket}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The shared server (started on first use).
pub fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let found = Command::new("sh")
            .args(["-c", "command -v moto_server"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "moto_server not found: the S3 tests need a real S3-compatible server; install it with \
             `pip install 'moto[server]'` (.ci/run does)"
        );
        let port = free_port();
        let child = spawn_moto(port);
        wait_listening(port);
        let endpoint = format!("http://127.0.0.1:{port}");
        create_bucket(&endpoint, BUCKET);
        // Every pgstrata process (and PostgreSQL's archive_command, started
        // from here) finds the server and its credentials in the environment.
        std::env::set_var("PGSTRATA_S3_ENDPOINT", &endpoint);
        std::env::set_var("PGSTRATA_S3_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        Server {
            endpoint,
            _child: Mutex::new(child),
        }
    })
}

/// A new, unique prefix URL in the shared bucket.
pub fn new_url(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    server();
    format!(
        "s3://{BUCKET}/{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The library's view of a repository in the test server (for tests that
/// call the library directly).
pub fn location(url: &str, cache_dir: &std::path::Path) -> pgstrata::Location {
    let s = server();
    let mut c = pgstrata::S3Config::from_url(url).expect("s3 url");
    c.endpoint = Some(s.endpoint.clone());
    c.region = "us-east-1".into();
    c.path_style = true;
    pgstrata::Location::Remote {
        store: std::sync::Arc::new(pgstrata::S3Backend::new(c).expect("s3 backend")),
        name: url.to_string(),
        cache_dir: cache_dir.to_path_buf(),
    }
}

/// `scripts/s3proxy.py` in front of the shared server: counts requests,
/// answers a share of them 503 SlowDown, or checks the access key; being a
/// process of its own, it can be killed mid-request and started again.
pub struct Proxy {
    pub port: u16,
    pub log: std::path::PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Proxy {
    pub fn start(log: std::path::PathBuf, args: &[&str]) -> Proxy {
        let mut p = Proxy {
            port: free_port(),
            log,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        p.restart();
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start it (again) on its port.
    pub fn restart(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3proxy.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--listen", &self.port.to_string()])
            .args(["--upstream", &server().endpoint])
            .args(["--log", self.log.to_str().unwrap()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3proxy.py");
        self.child = Some(child);
        wait_listening(self.port);
    }

    /// Kill it at once (requests in flight break off).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Request lines logged so far (`KIND METHOD STATUS PATH`).
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The S3 backend of a repository in the test server.
pub fn backend(url: &str) -> pgstrata::S3Backend {
    let s = server();
    let mut c = pgstrata::S3Config::from_url(url).expect("s3 url");
    c.endpoint = Some(s.endpoint.clone());
    c.path_style = true;
    pgstrata::S3Backend::new(c).expect("s3 backend")
}
