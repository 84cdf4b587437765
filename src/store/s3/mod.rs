//! The S3 backend: a repository's objects under a prefix of a bucket in any
//! S3-compatible store, over HTTPS (or HTTP to a local server), with SigV4
//! presigned requests (`rusty-s3`) sent by `ureq`.
//!
//! Durability: S3 makes an object visible, whole, when its PUT (or the
//! completion of its multipart upload) succeeds, and never partially. A
//! streamed object is buffered up to [`BUFFER_MAX`] and sent in one PUT at
//! `finish` (its name is known only then: packs are named by their content;
//! packs upload two at a time, see `backup::writer`); a larger
//! one goes up as a multipart upload under `tmp/` and is copied to its name
//! at `finish`, server side. Uploads of a killed process stay invisible and
//! are aborted by `expire` ([`Backend::collect_abandoned`]).
//!
//! Conditional writes (`If-None-Match: *`) make `put_new`; a retry that
//! finds the object already there reads it back to tell its own earlier
//! attempt from another writer's object.

mod config;
mod http;
mod multipart;
use multipart::S3Writer;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusty_s3::actions::{DeleteObjectsResponse, ObjectIdentifier};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

pub use config::{S3Config, S3Credentials};
pub(crate) use http::RequestCounts;
use http::{Client, Kind, Method, Payload, Req, Resp, Retry, StreamOrResp, EMPTY};

use crate::error::{Error, Hint, Result, Setting};
use crate::store::backend::{same_bytes, Backend, Exact, ObjectWriter, Source};

/// Objects up to this size are sent from memory at `finish`.
pub const BUFFER_MAX: usize = 64 << 20;
/// Multipart part size (S3's minimum is 5 MiB but for the last).
pub(crate) const PART: usize = 8 << 20;
/// Downloads of an object to compare with a body (each from its start).
const HOLDS_ATTEMPTS: u32 = 3;

/// How long a signed request stays valid (retries sign afresh).
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
/// Small range reads are served from aligned windows of this size, kept in a
/// small cache: restore and block-map reads walk packs in order, one record
/// at a time, and one request per record would make them latency-bound.
pub(crate) const WINDOW: u64 = 4 << 20;
/// Windows kept (memory: `WINDOWS` x `WINDOW`, 32 MiB). Readers walk
/// packs front to back (restore in the order files were packed), so few
/// windows are live at once: a few per worker.
const WINDOWS: usize = 8;

/// A window read: (key, window index, bytes).
type Window = (String, u64, Arc<Vec<u8>>);

/// Recently read windows, newest at the back.
#[derive(Default)]
struct Windows(std::sync::Mutex<std::collections::VecDeque<Window>>);

impl Windows {
    fn get(&self, key: &str, w: u64) -> Option<Arc<Vec<u8>>> {
        let mut c = self.0.lock().ok()?;
        let i = c.iter().position(|(k, x, _)| *x == w && k == key)?;
        let e = c.remove(i)?;
        let data = e.2.clone();
        c.push_back(e);
        Some(data)
    }
    fn put(&self, key: &str, w: u64, data: Arc<Vec<u8>>) {
        if let Ok(mut c) = self.0.lock() {
            if c.len() >= WINDOWS {
                c.pop_front();
            }
            c.push_back((key.to_string(), w, data));
        }
    }
    fn forget(&self, key: &str) {
        if let Ok(mut c) = self.0.lock() {
            c.retain(|(k, _, _)| k != key);
        }
    }
}

struct Inner {
    name: String,
    bucket: Bucket,
    creds: Credentials,
    /// "" or "prefix/".
    prefix: String,
    storage_class: Option<String>,
    client: Client,
    windows: Windows,
}

/// Objects in an S3 bucket under a prefix.
#[derive(Clone)]
pub struct S3Backend(Arc<Inner>);

/// A multipart upload found in the bucket.
#[derive(Clone, Debug)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

/// An HTTP date (RFC 9110's IMF-fixdate, e.g. `Last-Modified`).
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let mut tm =
        jiff::fmt::strtime::BrokenDownTime::parse("%a, %d %b %Y %H:%M:%S GMT", s.trim()).ok()?;
    // Only the date counts: a server's wrong weekday does not void it.
    tm.set_weekday(None);
    let t = jiff::tz::Offset::UTC
        .to_timestamp(tm.to_datetime().ok()?)
        .ok()?;
    Some(t.into())
}

/// An RFC 3339 time with its offset (S3's `Initiated`).
fn parse_iso(s: &str) -> Option<SystemTime> {
    s.trim().parse::<jiff::Timestamp>().ok().map(Into::into)
}

impl S3Backend {
    /// A client for `config` (credentials are resolved now; no request is
    /// sent).
    pub fn new(config: S3Config) -> Result<Self> {
        let name = config.url();
        let endpoint = config.endpoint_url();
        let url = url::Url::parse(&endpoint)
            .map_err(|e| Error::invalid(format!("S3 endpoint {endpoint:?}: {e}")))?;
        let style = match config.path_style {
            true => UrlStyle::Path,
            false => UrlStyle::VirtualHost,
        };
        let bucket = Bucket::new(url, style, config.bucket.clone(), config.region.clone())
            .map_err(|e| {
                Error::invalid(format!(
                    "S3 endpoint {endpoint} with bucket {}: {e}; an IP address or localhost \
                     needs path-style addressing",
                    config.bucket
                ))
                .hint(Hint::give(Setting::S3UriStyle, "path"))
            })?;
        let c = config.resolve_credentials()?;
        let creds = match &c.token {
            Some(t) => Credentials::new_with_token(c.key.clone(), c.secret.as_str(), t.as_str()),
            None => Credentials::new(c.key.clone(), c.secret.as_str()),
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(f) = &config.ca_file {
            let pem = std::fs::read(f).map_err(|e| Error::io(f, e))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(Error::setting(
                    Setting::S3CaFile,
                    format!("{}: no PEM certificate in it", f.display()),
                ));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .timeout_send_body(Some(Duration::from_secs(300)))
            .max_idle_connections_per_host(16)
            .build()
            .new_agent();
        let prefix = match config.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", config.prefix),
        };
        Ok(S3Backend(Arc::new(Inner {
            name,
            bucket,
            creds,
            prefix,
            storage_class: config.storage_class,
            client: Client {
                endpoint,
                agent,
                counts: Default::default(),
                retry: Retry::default(),
            },
            windows: Windows::default(),
        })))
    }

    /// Requests sent so far.
    pub fn requests(&self) -> RequestCounts {
        self.0.client.counts.snapshot()
    }

    /// Multipart uploads under the prefix started before `older_than` ago.
    pub fn stale_uploads(&self, older_than: Duration) -> Result<Vec<Upload>> {
        self.0.stale_uploads(older_than)
    }
}

impl Inner {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn what(&self, key: &str) -> String {
        format!("{}/{key}", self.name)
    }

    /// A one-line error for an unexpected answer about `key`.
    fn fail(&self, key: &str, r: &Resp) -> Error {
        let (code, msg) = http::s3_error(&r.body);
        match (r.status, code.as_str()) {
            (404, "NoSuchBucket") => Error::NotFound(format!(
                "bucket {} does not exist (at {}): create it, or fix the bucket in the \
                 repository's URL",
                self.bucket.name(),
                self.bucket.base_url()
            )),
            (403, _) | (401, _) => Error::Refused(format!(
                "access denied to {} ({}{}): check the credentials and the bucket's policy",
                self.name,
                if code.is_empty() {
                    "HTTP 403".into()
                } else {
                    code.clone()
                },
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            )),
            (301, _) | (307, _) => Error::invalid(format!(
                "bucket {} is in another region ({code})",
                self.bucket.name()
            ))
            .hint(Hint::give(Setting::S3Region, "REGION")),
            (s, _) => Error::io(
                self.what(key),
                std::io::Error::other(format!("HTTP {s} {code} {msg}").trim().to_string()),
            ),
        }
    }

    fn headers_for_put(&self) -> Vec<(&'static str, String)> {
        match &self.storage_class {
            Some(c) => vec![("x-amz-storage-class", c.clone())],
            None => Vec::new(),
        }
    }

    fn put_url(&self, full: &str) -> String {
        let mut a = self.bucket.put_object(Some(&self.creds), full);
        if let Some(c) = &self.storage_class {
            a.headers_mut().insert("x-amz-storage-class", c.clone());
        }
        a.sign(SIGNED_FOR).to_string()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let full = self.full(key);
        let r = self.client.send(Kind::Put, &self.what(key), &|| Req {
            method: Method::Put,
            url: self.put_url(&full),
            headers: self.headers_for_put(),
            body: Payload::Bytes(data),
        })?;
        match r.status {
            200 | 201 | 204 => Ok(()),
            _ => Err(self.fail(key, &r)),
        }
    }

    fn put_new_from(&self, key: &str, body: &dyn Source) -> Result<bool> {
        let full = self.full(key);
        let attempts = std::cell::Cell::new(0u32);
        let r = self.client.send(Kind::Put, &self.what(key), &|| {
            attempts.set(attempts.get() + 1);
            let mut headers = self.headers_for_put();
            headers.push(("if-none-match", "*".into()));
            Req {
                method: Method::Put,
                url: self.put_url(&full),
                headers,
                body: Payload::Stream(body),
            }
        })?;
        match r.status {
            200 | 201 | 204 => Ok(true),
            // 409: a conditional write of the same name was in progress.
            412 | 409 => {
                // After a retry, the object may be this call's own first
                // attempt, whose answer was lost.
                if attempts.get() > 1 && self.holds(key, body)? {
                    return Ok(true);
                }
                Ok(false)
            }
            _ => Err(self.fail(key, &r)),
        }
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let full = self.full(key);
        match self.client.open(&self.what(key), &|| {
            self.bucket
                .get_object(Some(&self.creds), &full)
                .sign(SIGNED_FOR)
                .to_string()
        })? {
            StreamOrResp::Stream(r) => Ok(r),
            StreamOrResp::Resp(r)
                if r.status == 404 && http::s3_error(&r.body).0 != "NoSuchBucket" =>
            {
                Err(Error::missing("object", key))
            }
            StreamOrResp::Resp(r) => Err(self.fail(key, &r)),
        }
    }

    /// Whether the object `key` holds exactly `body`. A download that
    /// breaks off is started again (`open` retries only until the answer
    /// starts): the object is most likely this process's own.
    fn holds(&self, key: &str, body: &dyn Source) -> Result<bool> {
        let mut attempt = 1;
        loop {
            let mut stored = match self.open(key) {
                Ok(r) => r,
                Err(Error::MissingObject { .. }) => return Ok(false),
                Err(e) => return Err(e),
            };
            let mut mine = Exact::new(body)?;
            match same_bytes(&mut stored, &mut mine) {
                Ok(same) => return Ok(same),
                Err(e) if mine.failed.is_some() || attempt == HOLDS_ATTEMPTS => {
                    return Err(Error::io(self.what(key), e))
                }
                Err(e) => tracing::info!("{}: {e}; comparing again", self.what(key)),
            }
            attempt += 1;
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let full = self.full(key);
        let r = self.client.send(Kind::Get, &self.what(key), &|| Req {
            method: Method::Get,
            url: self
                .bucket
                .get_object(Some(&self.creds), &full)
                .sign(SIGNED_FOR)
                .to_string(),
            headers: Vec::new(),
            body: EMPTY,
        })?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 if http::s3_error(&r.body).0 != "NoSuchBucket" => Ok(None),
            _ => Err(self.fail(key, &r)),
        }
    }

    /// `get_range` through the window cache for small reads, into `out`
    /// (its old contents replaced).
    fn get_range_cached(
        &self,
        key: &str,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        if len == 0 {
            return Ok(());
        }
        let (w0, w1) = (offset / WINDOW, (offset + len as u64 - 1) / WINDOW);
        if len as u64 > WINDOW / 2 || w1 > w0 + 1 {
            *out = self.get_range(key, offset, len)?;
            return Ok(());
        }
        out.reserve(len);
        for w in w0..=w1 {
            let data = match self.windows.get(key, w) {
                Some(d) => d,
                None => {
                    let d = Arc::new(self.get_window(key, w)?);
                    self.windows.put(key, w, d.clone());
                    d
                }
            };
            let start = offset.max(w * WINDOW) - w * WINDOW;
            let end = (offset + len as u64).min((w + 1) * WINDOW) - w * WINDOW;
            let part = data.get(start as usize..end as usize).ok_or_else(|| {
                Error::corrupt(
                    format!("object {key}"),
                    format!("truncated: cannot read {len} bytes at offset {offset}"),
                )
            })?;
            out.extend_from_slice(part);
        }
        Ok(())
    }

    /// Window `w` of an object (shorter at its end).
    fn get_window(&self, key: &str, w: u64) -> Result<Vec<u8>> {
        let full = self.full(key);
        let range = format!("bytes={}-{}", w * WINDOW, (w + 1) * WINDOW - 1);
        let r = self.client.send(Kind::Get, &self.what(key), &|| Req {
            method: Method::Get,
            url: self
                .bucket
                .get_object(Some(&self.creds), &full)
                .sign(SIGNED_FOR)
                .to_string(),
            headers: vec![("range", range.clone())],
            body: EMPTY,
        })?;
        match r.status {
            206 => Ok(r.body),
            200 => Ok(r
                .body
                .get((w * WINDOW) as usize..)
                .map(|b| b[..b.len().min(WINDOW as usize)].to_vec())
                .unwrap_or_default()),
            404 if http::s3_error(&r.body).0 != "NoSuchBucket" => {
                Err(Error::missing("object", key))
            }
            416 => Ok(Vec::new()),
            _ => Err(self.fail(key, &r)),
        }
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let full = self.full(key);
        let range = format!("bytes={}-{}", offset, offset + len as u64 - 1);
        let r = self.client.send(Kind::Get, &self.what(key), &|| Req {
            method: Method::Get,
            url: self
                .bucket
                .get_object(Some(&self.creds), &full)
                .sign(SIGNED_FOR)
                .to_string(),
            headers: vec![("range", range.clone())],
            body: EMPTY,
        })?;
        let body = match r.status {
            206 => r.body,
            // A server that ignores ranges sends it all.
            200 => r
                .body
                .get(offset as usize..)
                .map(|b| b[..b.len().min(len)].to_vec())
                .unwrap_or_default(),
            404 if http::s3_error(&r.body).0 != "NoSuchBucket" => {
                return Err(Error::missing("object", key))
            }
            416 => Vec::new(),
            _ => return Err(self.fail(key, &r)),
        };
        if body.len() != len {
            return Err(Error::corrupt(
                format!("object {key}"),
                format!("truncated: cannot read {len} bytes at offset {offset}"),
            ));
        }
        Ok(body)
    }

    fn head(&self, key: &str) -> Result<Option<Resp>> {
        let full = self.full(key);
        let r = self.client.send(Kind::Head, &self.what(key), &|| Req {
            method: Method::Head,
            url: self
                .bucket
                .head_object(Some(&self.creds), &full)
                .sign(SIGNED_FOR)
                .to_string(),
            headers: Vec::new(),
            body: EMPTY,
        })?;
        match r.status {
            200 => Ok(Some(r)),
            404 => Ok(None),
            _ => Err(self.fail(key, &r)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let full = self.full(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = self.client.send(Kind::List, &self.what(prefix), &|| {
                let mut a = self.bucket.list_objects_v2(Some(&self.creds));
                a.with_prefix(full.as_str());
                if let Some(t) = &token {
                    a.with_continuation_token(t.as_str());
                }
                Req {
                    method: Method::Get,
                    url: a.sign(SIGNED_FOR).to_string(),
                    headers: Vec::new(),
                    body: EMPTY,
                }
            })?;
            if r.status != 200 {
                return Err(self.fail(prefix, &r));
            }
            let text = String::from_utf8_lossy(&r.body);
            let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&text).map_err(|e| {
                Error::io(
                    self.what(prefix),
                    std::io::Error::other(format!("unreadable listing: {e}")),
                )
            })?;
            for c in parsed.contents {
                if let Some(k) = c.key.strip_prefix(&self.prefix) {
                    out.push((k.to_string(), c.size.unwrap_or(0)));
                }
            }
            match parsed.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let full = self.full(key);
        let r = self.client.send(Kind::Delete, &self.what(key), &|| Req {
            method: Method::Delete,
            url: self
                .bucket
                .delete_object(Some(&self.creds), &full)
                .sign(SIGNED_FOR)
                .to_string(),
            headers: Vec::new(),
            body: EMPTY,
        })?;
        match r.status {
            200 | 202 | 204 => Ok(()),
            404 if http::s3_error(&r.body).0 != "NoSuchBucket" => Ok(()),
            _ => Err(self.fail(key, &r)),
        }
    }
}

/// Keys one `DeleteObjects` request may name (S3's limit).
const DELETE_BATCH: usize = 1000;

impl Inner {
    /// Delete up to [`DELETE_BATCH`] objects with one `DeleteObjects`
    /// request (an expire removes thousands of WAL files and copies: one
    /// request each would make it latency-bound). `false` when the store
    /// does not implement the request; a key already gone is no error.
    fn delete_batch(&self, keys: &[String]) -> Result<bool> {
        let ids: Vec<ObjectIdentifier> = keys
            .iter()
            .map(|k| ObjectIdentifier::new(self.full(k)))
            .collect();
        let action = |quiet| {
            let mut a = self.bucket.delete_objects(Some(&self.creds), ids.iter());
            a.set_quiet(quiet);
            a
        };
        let (body, md5) = action(true).body_with_md5();
        let first = keys.first().map(String::as_str).unwrap_or("");
        let what = format!("{} ({} objects)", self.what(first), keys.len());
        let r = self.client.send(Kind::Delete, &what, &|| Req {
            method: Method::Post,
            url: action(true).sign(SIGNED_FOR).to_string(),
            headers: vec![("content-md5", md5.clone())],
            body: Payload::Bytes(body.as_bytes()),
        })?;
        match r.status {
            200 => {}
            // Stores without multi-object delete answer 501 NotImplemented
            // (some 400 or 405); S3 itself answers 400 MalformedXML or
            // InvalidRequest only to a bad body, which this never sends.
            501 | 405 => return Ok(false),
            400 if http::s3_error(&r.body).0 == "NotImplemented" => return Ok(false),
            _ => return Err(self.fail(first, &r)),
        }
        let text = String::from_utf8_lossy(&r.body);
        let parsed = match DeleteObjectsResponse::parse(&text) {
            Ok(p) => p,
            Err(e) => {
                // Some stores leave out the namespace: the objects are then
                // deleted one by one, which is safe to repeat.
                tracing::debug!("{what}: unreadable answer to a multi-object delete: {e}");
                return Ok(false);
            }
        };
        match parsed.errors.iter().find(|e| e.code != "NoSuchKey") {
            None => Ok(true),
            Some(e) => Err(Error::io(
                format!(
                    "{}/{}",
                    self.name,
                    e.key.strip_prefix(&self.prefix).unwrap_or(&e.key)
                ),
                std::io::Error::other(format!("not deleted: {} {}", e.code, e.message)),
            )),
        }
    }
}

impl Backend for S3Backend {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.0.windows.forget(key);
        self.0.put(key, data)
    }

    fn put_new_from(&self, key: &str, body: &dyn Source) -> Result<bool> {
        self.0.put_new_from(key, body)
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer {
            inner: self.0.clone(),
            buf: Vec::new(),
            written: 0,
            spill: None,
        }))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.0.get(key)
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.0.get_range_cached(key, offset, len, &mut out)?;
        Ok(out)
    }

    fn get_range_into(&self, key: &str, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        self.0.get_range_cached(key, offset, len, out)
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.0.open(key)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        Ok(self
            .0
            .head(key)?
            .and_then(|r| r.headers.get("content-length").and_then(|v| v.parse().ok())))
    }

    fn modified(&self, key: &str) -> Result<Option<SystemTime>> {
        Ok(self
            .0
            .head(key)?
            .and_then(|r| r.headers.get("last-modified").and_then(parse_http_date)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.0.list(prefix)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.0.windows.forget(key);
        self.0.delete(key)
    }

    fn delete_many(&self, keys: &[String]) -> Result<()> {
        keys.iter().for_each(|k| self.0.windows.forget(k));
        let mut multi = true;
        for batch in keys.chunks(DELETE_BATCH) {
            multi = multi && self.0.delete_batch(batch)?;
            if !multi {
                tracing::debug!(
                    "{}: no multi-object delete; one request per object",
                    self.0.name
                );
                batch.iter().try_for_each(|k| self.0.delete(k))?;
            }
        }
        Ok(())
    }

    fn collect_abandoned(&self, older_than: Duration) -> Result<u64> {
        let stale = self.0.stale_uploads(older_than)?;
        for u in &stale {
            self.0.abort(&u.key, &u.upload_id)?;
        }
        Ok(stale.len() as u64)
    }

    fn request_counts(&self) -> Option<RequestCounts> {
        Some(self.requests())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let t = parse_http_date("Sun, 22 Nov 2026 15:00:00 GMT").unwrap();
        let i = parse_iso("2026-11-22T15:00:00.000Z").unwrap();
        assert_eq!(t, i);
        assert!(parse_http_date("yesterday").is_none());
        let at = |secs: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        // RFC 9110's IMF-fixdate, as S3 sends Last-Modified.
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            at(784_111_777)
        );
        assert_eq!(parse_http_date(" Thu, 01 Jan 1970 00:00:00 GMT "), at(0));
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT"),
            at(1_709_251_199)
        );
        // The weekday is not checked against the date.
        assert_eq!(
            parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"),
            at(784_111_777)
        );
        assert!(parse_http_date("Sun, 06 Nov 1994 08:49:37").is_none());
        assert!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT trailing").is_none());
        assert!(parse_http_date("Sun, 31 Nov 1994 08:49:37 GMT").is_none());
        assert!(parse_http_date("1994-11-06T08:49:37Z").is_none());
        // ISO 8601 / RFC 3339 as ListMultipartUploads reports Initiated.
        assert_eq!(parse_iso("1994-11-06T08:49:37Z"), at(784_111_777));
        assert_eq!(
            parse_iso("1994-11-06T08:49:37.250Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(784_111_777_250))
        );
        assert_eq!(parse_iso("1994-11-06T10:49:37+02:00"), at(784_111_777));
        assert!(parse_iso("1994-11-06T08:49:37").is_none());
        assert!(parse_iso("Sun, 06 Nov 1994 08:49:37 GMT").is_none());
        assert!(parse_iso("").is_none());
    }
}
