//! Sending signed requests to S3: retries with backoff, request counts, and
//! one-line errors from S3's XML error bodies.
//!
//! Retried: connection and timeout errors, 500/502/503/504, 429, `SlowDown`
//! and `RequestTimeout`. Each attempt is signed afresh. Nothing here decides
//! whether a retry is safe: callers only send requests that are idempotent
//! or that they check afterwards (conditional and multipart writes).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::backend::{Exact, Source};

/// Request kinds, as S3 bills them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Put,
    Get,
    Head,
    List,
    Delete,
}

pub(crate) use crate::store::backend::RequestCounts;

#[derive(Default)]
pub(super) struct Counters([AtomicU64; 5]);

impl Counters {
    fn add(&self, k: Kind) {
        self.0[k as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn snapshot(&self) -> RequestCounts {
        let g = |k: Kind| self.0[k as usize].load(Ordering::Relaxed);
        RequestCounts {
            put: g(Kind::Put),
            get: g(Kind::Get),
            head: g(Kind::Head),
            list: g(Kind::List),
            delete: g(Kind::Delete),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Put,
    Post,
    Head,
    Delete,
}

/// One request, signed.
pub(super) struct Req<'a> {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Payload<'a>,
}

/// What a request sends.
#[derive(Clone, Copy)]
pub(super) enum Payload<'a> {
    Bytes(&'a [u8]),
    /// Streamed, with its length as `Content-Length` (S3 takes no
    /// chunked uploads).
    Stream(&'a dyn Source),
}

pub(super) const EMPTY: Payload<'static> = Payload::Bytes(&[]);

/// The most a response's Content-Length reserves up front (more is read
/// all the same, growing the buffer).
const PREALLOC_MAX: u64 = 256 << 20;

pub(super) struct Resp {
    pub status: u16,
    pub headers: http_headers::Headers,
    pub body: Vec<u8>,
}

pub(super) mod http_headers {
    /// The few response headers pgstrata reads, lowercased names.
    #[derive(Default, Debug, Clone)]
    pub(crate) struct Headers(pub Vec<(String, String)>);
    impl Headers {
        pub(crate) fn get(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }
}

/// How hard to try.
#[derive(Clone, Copy, Debug)]
pub(super) struct Retry {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Retry {
    /// About a minute in all before giving up.
    fn default() -> Self {
        Retry {
            attempts: 10,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(15),
        }
    }
}

impl Retry {
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        // Full jitter between half and all of it: clients that failed
        // together do not come back together.
        let mut r = [0u8; 2];
        let _ = getrandom::fill(&mut r);
        let f = 0.5 + f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 2.0;
        exp.mul_f64(f)
    }
}

/// The text of `<name>...</name>` in an XML body.
pub(super) fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let s = xml.find(&open)? + open.len();
    let e = xml[s..].find(&close)? + s;
    Some(&xml[s..e])
}

/// Every `<name>...</name>` block of an XML body, in order.
pub(super) fn blocks<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(s) = rest.find(&open) {
        let from = s + open.len();
        let Some(e) = rest[from..].find(&close) else {
            break;
        };
        out.push(&rest[from..from + e]);
        rest = &rest[from + e + close.len()..];
    }
    out
}

pub(super) fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// S3's error code and message from an error body (empty when none).
pub(super) fn s3_error(body: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(body);
    (
        tag(&text, "Code").map(unescape).unwrap_or_default(),
        tag(&text, "Message").map(unescape).unwrap_or_default(),
    )
}

fn retryable(status: u16, body: &[u8]) -> bool {
    match status {
        429 | 500 | 502 | 503 | 504 => true,
        400 => {
            let (code, _) = s3_error(body);
            code == "RequestTimeout" || code == "SlowDown"
        }
        _ => false,
    }
}

/// A transport error of `ureq`, or a body that broke off.
fn transport(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A transport error that no retry can cure: a bad URL, a host that does
/// not resolve, a certificate that is not trusted.
fn fatal(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::BadUri(_)
        | ureq::Error::HostNotFound
        | ureq::Error::Tls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::Rustls(_)
        | ureq::Error::RequireHttpsOnly(_)
        | ureq::Error::TlsRequired => true,
        ureq::Error::Io(io) => io.to_string().contains("certificate"),
        _ => false,
    }
}

/// Why a request failed: retry it, or give up at once.
enum Failure {
    Retry(String),
    Fatal(String),
}

pub(super) struct Client {
    /// Where requests go, for messages.
    pub endpoint: String,
    pub agent: ureq::Agent,
    pub counts: Counters,
    pub retry: Retry,
}

impl Client {
    fn once(&self, req: &Req<'_>) -> std::result::Result<Resp, Failure> {
        let hdr = |mut b: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
            for (k, v) in &req.headers {
                b = b.header(*k, v.as_str());
            }
            b
        };
        let hdr_body = |mut b: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            for (k, v) in &req.headers {
                b = b.header(*k, v.as_str());
            }
            b
        };
        let a = &self.agent;
        let r = match req.method {
            Method::Get => hdr(a.get(&req.url)).call(),
            Method::Head => hdr(a.head(&req.url)).call(),
            Method::Delete => hdr(a.delete(&req.url)).call(),
            Method::Put | Method::Post => {
                let b = match req.method {
                    Method::Put => hdr_body(a.put(&req.url)),
                    _ => hdr_body(a.post(&req.url)),
                };
                match req.body {
                    Payload::Bytes(d) => b.send(d),
                    Payload::Stream(s) => {
                        // A body that cannot be read will not be by trying
                        // again: its failure is not the network's.
                        let mut r = Exact::new(s).map_err(|e| Failure::Fatal(e.to_string()))?;
                        let sent = b
                            .header("content-length", s.len())
                            .send(ureq::SendBody::from_reader(&mut r));
                        if let Some(e) = r.failed.take() {
                            return Err(Failure::Fatal(e));
                        }
                        sent
                    }
                }
            }
        };
        let mut resp = r.map_err(|e| match fatal(&e) {
            true => Failure::Fatal(transport(e)),
            false => Failure::Retry(transport(e)),
        })?;
        let status = resp.status().as_u16();
        let headers = http_headers::Headers(
            resp.headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
        );
        let body = match req.method {
            Method::Head => Vec::new(),
            _ => {
                // Sized from Content-Length: one allocation for a 4 MiB
                // window instead of a dozen doublings and copies. The length
                // only sizes the buffer; the bytes read are what the body holds.
                let body = resp.body_mut();
                let hint = body.content_length().unwrap_or(0).min(PREALLOC_MAX);
                let mut v = Vec::with_capacity(hint as usize);
                body.as_reader()
                    .read_to_end(&mut v)
                    .map_err(|e| Failure::Retry(transport(ureq::Error::from(e))))?;
                v
            }
        };
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// Send the request `make` builds (afresh for each attempt), retrying
    /// what may be retried. `what` names the object for messages.
    pub(super) fn send<'b>(
        &self,
        kind: Kind,
        what: &str,
        make: &dyn Fn() -> Req<'b>,
    ) -> Result<Resp> {
        let mut last = String::new();
        for attempt in 0..self.retry.attempts {
            if attempt > 0 {
                let d = self.retry.delay(attempt - 1);
                tracing::info!("{what}: {last}; retrying in {:.1} s", d.as_secs_f64());
                std::thread::sleep(d);
            }
            self.counts.add(kind);
            match self.once(&make()) {
                Ok(r) if retryable(r.status, &r.body) => {
                    let (code, msg) = s3_error(&r.body);
                    last = format!("HTTP {} {code} {msg}", r.status).trim().to_string();
                }
                Ok(r) => return Ok(r),
                Err(Failure::Retry(e)) => last = e,
                Err(Failure::Fatal(e)) => {
                    return Err(Error::io(
                        what,
                        std::io::Error::other(format!("{e} (at {})", self.endpoint)),
                    ))
                }
            }
        }
        Err(Error::io(
            what,
            std::io::Error::other(format!(
                "gave up after {} attempts at {}: {last}",
                self.retry.attempts, self.endpoint
            )),
        ))
    }

    /// A GET whose body is streamed to the caller (retried until the
    /// response starts; a body that breaks off is the reader's error).
    pub(super) fn open(&self, what: &str, url: &dyn Fn() -> String) -> Result<StreamOrResp> {
        let mut last = String::new();
        for attempt in 0..self.retry.attempts {
            if attempt > 0 {
                let d = self.retry.delay(attempt - 1);
                tracing::info!("{what}: {last}; retrying in {:.1} s", d.as_secs_f64());
                std::thread::sleep(d);
            }
            self.counts.add(Kind::Get);
            match self.agent.get(url()).call() {
                Ok(resp) if resp.status().as_u16() == 200 => {
                    return Ok(StreamOrResp::Stream(Box::new(
                        resp.into_body().into_reader(),
                    )))
                }
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = resp
                        .body_mut()
                        .with_config()
                        .limit(1 << 20)
                        .read_to_vec()
                        .unwrap_or_default();
                    if retryable(status, &body) {
                        let (code, msg) = s3_error(&body);
                        last = format!("HTTP {status} {code} {msg}");
                        continue;
                    }
                    return Ok(StreamOrResp::Resp(Resp {
                        status,
                        headers: Default::default(),
                        body,
                    }));
                }
                Err(e) if fatal(&e) => {
                    return Err(Error::io(
                        what,
                        std::io::Error::other(format!("{e} (at {})", self.endpoint)),
                    ))
                }
                Err(e) => last = transport(e),
            }
        }
        Err(Error::io(
            what,
            std::io::Error::other(format!(
                "gave up after {} attempts at {}: {last}",
                self.retry.attempts, self.endpoint
            )),
        ))
    }
}

pub(super) enum StreamOrResp {
    Stream(Box<dyn Read + Send>),
    Resp(Resp),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_and_backoff() {
        let x = "<Error><Code>SlowDown</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(s3_error(x.as_bytes()), ("SlowDown".into(), "a & b".into()));
        assert!(retryable(503, b""));
        assert!(retryable(
            400,
            b"<Error><Code>RequestTimeout</Code></Error>"
        ));
        assert!(!retryable(403, b""));
        let l = "<R><Upload><Key>a</Key></Upload><Upload><Key>b</Key></Upload></R>";
        let keys: Vec<_> = blocks(l, "Upload")
            .iter()
            .map(|b| tag(b, "Key").unwrap())
            .collect();
        assert_eq!(keys, ["a", "b"]);
        let r = Retry::default();
        assert!(r.delay(0) <= Duration::from_millis(200));
        assert!(r.delay(30) <= Duration::from_secs(15));
        assert!(r.delay(30) >= Duration::from_millis(7500));
    }
}
