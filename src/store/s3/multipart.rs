//! Multipart uploads: objects larger than [`BUFFER_MAX`](super::BUFFER_MAX)
//! spilled in parts under `tmp/` and copied, and the listing of uploads a
//! killed process left behind.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusty_s3::S3Action;

use super::http::{self, Kind, Method, Payload, Req, EMPTY};
use super::{parse_iso, Inner, Upload, BUFFER_MAX, PART, SIGNED_FOR};
use crate::error::{Error, Result};
use crate::store::backend::ObjectWriter;

impl Inner {
    pub(super) fn create_upload(&self, key: &str) -> Result<String> {
        let full = self.full(key);
        let r = self.client.send(Kind::Put, &self.what(key), &|| {
            let mut a = self
                .bucket
                .create_multipart_upload(Some(&self.creds), &full);
            if let Some(c) = &self.storage_class {
                a.headers_mut().insert("x-amz-storage-class", c.clone());
            }
            Req {
                method: Method::Post,
                url: a.sign(SIGNED_FOR).to_string(),
                headers: self.headers_for_put(),
                body: EMPTY,
            }
        })?;
        if r.status != 200 {
            return Err(self.fail(key, &r));
        }
        let text = String::from_utf8_lossy(&r.body);
        http::tag(&text, "UploadId")
            .map(http::unescape)
            .ok_or_else(|| {
                Error::io(
                    self.what(key),
                    std::io::Error::other("multipart upload started without an UploadId"),
                )
            })
    }

    pub(super) fn upload_part(&self, key: &str, id: &str, n: u16, data: &[u8]) -> Result<String> {
        let full = self.full(key);
        let r = self.client.send(Kind::Put, &self.what(key), &|| Req {
            method: Method::Put,
            url: self
                .bucket
                .upload_part(Some(&self.creds), &full, n, id)
                .sign(SIGNED_FOR)
                .to_string(),
            headers: Vec::new(),
            body: Payload::Bytes(data),
        })?;
        if r.status != 200 {
            return Err(self.fail(key, &r));
        }
        r.headers.get("etag").map(str::to_string).ok_or_else(|| {
            Error::io(
                self.what(key),
                std::io::Error::other(format!("part {n} stored without an ETag")),
            )
        })
    }

    pub(super) fn complete(&self, key: &str, id: &str, etags: &[String], total: u64) -> Result<()> {
        let full = self.full(key);
        let action = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            &full,
            id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR).to_string();
        let body = action.body();
        let attempts = std::cell::Cell::new(0u32);
        let r = self.client.send(Kind::Put, &self.what(key), &|| {
            attempts.set(attempts.get() + 1);
            Req {
                method: Method::Post,
                url: url.clone(),
                headers: Vec::new(),
                body: Payload::Bytes(body.as_bytes()),
            }
        })?;
        let text = String::from_utf8_lossy(&r.body);
        // S3 may answer 200 and then an error in the body.
        if r.status == 200 && !text.contains("<Error>") {
            return Ok(());
        }
        // A retry of a completion that went through: the upload is gone and
        // the object is there, whole.
        if attempts.get() > 1 && http::s3_error(&r.body).0 == "NoSuchUpload" {
            if let Some(h) = self.head(key)? {
                if h.headers.get("content-length").and_then(|v| v.parse().ok()) == Some(total) {
                    return Ok(());
                }
            }
        }
        Err(self.fail(key, &r))
    }

    pub(super) fn abort(&self, key: &str, id: &str) -> Result<()> {
        let full = self.full(key);
        let r = self.client.send(Kind::Delete, &self.what(key), &|| Req {
            method: Method::Delete,
            url: self
                .bucket
                .abort_multipart_upload(Some(&self.creds), &full, id)
                .sign(SIGNED_FOR)
                .to_string(),
            headers: Vec::new(),
            body: EMPTY,
        })?;
        match r.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(self.fail(key, &r)),
        }
    }

    /// Server-side copy (objects up to 5 GiB; packs are at most 4 GiB).
    pub(super) fn copy(&self, from: &str, to: &str) -> Result<()> {
        let (src, dst) = (self.full(from), self.full(to));
        let source = format!("/{}/{}", self.bucket.name(), src);
        let r = self.client.send(Kind::Put, &self.what(to), &|| {
            let mut a = self.bucket.put_object(Some(&self.creds), &dst);
            a.headers_mut().insert("x-amz-copy-source", source.clone());
            let mut headers = vec![("x-amz-copy-source", source.clone())];
            if let Some(c) = &self.storage_class {
                a.headers_mut().insert("x-amz-storage-class", c.clone());
                headers.push(("x-amz-storage-class", c.clone()));
            }
            Req {
                method: Method::Put,
                url: a.sign(SIGNED_FOR).to_string(),
                headers,
                body: EMPTY,
            }
        })?;
        let text = String::from_utf8_lossy(&r.body);
        match r.status {
            200 if !text.contains("<Error>") => Ok(()),
            _ => Err(self.fail(to, &r)),
        }
    }

    pub(super) fn stale_uploads(&self, older_than: Duration) -> Result<Vec<Upload>> {
        let full = self.full("");
        let r = self.client.send(Kind::List, &self.what(""), &|| {
            // ListMultipartUploads: the bucket's URL with `?uploads`.
            let mut a = self.bucket.list_objects_v2(Some(&self.creds));
            a.query_mut().remove("list-type");
            a.query_mut().remove("encoding-type");
            a.query_mut().insert("uploads", "");
            a.query_mut().insert("prefix", full.clone());
            Req {
                method: Method::Get,
                url: a.sign(SIGNED_FOR).to_string(),
                headers: Vec::new(),
                body: EMPTY,
            }
        })?;
        if r.status != 200 {
            return Err(self.fail("", &r));
        }
        let text = String::from_utf8_lossy(&r.body);
        let now = SystemTime::now();
        Ok(http::blocks(&text, "Upload")
            .into_iter()
            .filter_map(|b| {
                let key = http::unescape(http::tag(b, "Key")?);
                let key = key.strip_prefix(&self.prefix)?.to_string();
                let initiated = http::tag(b, "Initiated").and_then(parse_iso);
                Some(Upload {
                    key,
                    upload_id: http::unescape(http::tag(b, "UploadId")?),
                    initiated,
                })
            })
            .filter(|u| {
                u.initiated
                    .and_then(|t| now.duration_since(t).ok())
                    .is_none_or(|age| age >= older_than)
            })
            .collect())
    }
}

/// A multipart upload under a temporary name, for an object larger than
/// [`BUFFER_MAX`].
pub(super) struct Spill {
    key: String,
    id: String,
    etags: Vec<String>,
}

pub(super) struct S3Writer {
    pub(super) inner: Arc<Inner>,
    pub(super) buf: Vec<u8>,
    pub(super) written: u64,
    pub(super) spill: Option<Spill>,
}

impl S3Writer {
    fn flush_parts(&mut self, keep_last: bool) -> Result<()> {
        if self.spill.is_none() {
            let mut r = [0u8; 12];
            crate::format::crypt::random(&mut r)?;
            let key = format!(
                "{}upload-{}",
                crate::format::keys::TMP,
                crate::format::chunk::hex(&r)
            );
            let id = self.inner.create_upload(&key)?;
            self.spill = Some(Spill {
                key,
                id,
                etags: Vec::new(),
            });
        }
        let Some(sp) = self.spill.as_mut() else {
            return Err(Error::internal("no upload"));
        };
        while self.buf.len() >= PART && !(keep_last && self.buf.len() == PART) {
            let n = u16::try_from(sp.etags.len() + 1)
                .map_err(|_| Error::invalid("object too large for a multipart upload"))?;
            let e = self
                .inner
                .upload_part(&sp.key, &sp.id, n, &self.buf[..PART])?;
            sp.etags.push(e);
            self.buf.drain(..PART);
        }
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(buf);
        self.written += buf.len() as u64;
        if self.buf.len() > BUFFER_MAX || (self.spill.is_some() && self.buf.len() > PART) {
            self.flush_parts(true)?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn finish(mut self: Box<Self>, key: &str) -> Result<()> {
        let inner = self.inner.clone();
        let Some(mut sp) = self.spill.take() else {
            // One PUT for all that was buffered: S3 takes up to 5 GiB so,
            // and a multipart upload of a pack would cost the server a
            // second pass over its bytes (joining the parts) and 5 requests.
            let data = std::mem::take(&mut self.buf);
            return inner.put(key, &data);
        };
        let result = (|| {
            let n = u16::try_from(sp.etags.len() + 1)
                .map_err(|_| Error::invalid("object too large for a multipart upload"))?;
            let e = inner.upload_part(&sp.key, &sp.id, n, &self.buf)?;
            sp.etags.push(e);
            inner.complete(&sp.key, &sp.id, &sp.etags, self.written)?;
            inner.copy(&sp.key, key)?;
            inner.delete(&sp.key)
        })();
        if result.is_err() {
            let _ = inner.abort(&sp.key, &sp.id);
            let _ = inner.delete(&sp.key);
        }
        result
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // An abandoned upload: best effort; `expire` collects what remains.
        if let Some(sp) = self.spill.take() {
            let _ = self.inner.abort(&sp.key, &sp.id);
        }
    }
}
