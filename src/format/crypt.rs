//! Encryption at rest: the sealed-object envelope, the key hierarchy and the
//! key file.
//!
//! **Keys.** An encrypted repository has one random 256-bit master key. It is
//! stored only wrapped: XChaCha20-Poly1305 under a key-encryption key that
//! argon2id derives from the passphrase and a random salt ([`KeyFile`],
//! `pgstrata.key`). Changing the passphrase rewraps the master key; no object
//! changes. From the master key, BLAKE3's key derivation gives two keys that
//! are never stored: the *object key* (sealing objects) and the *id key*
//! (keyed BLAKE3 for chunk ids, block fingerprints and WAL hashes, so that an
//! id cannot confirm a guessed page).
//!
//! **Sealed objects** (packs, manifests, WAL objects, anything under an
//! object prefix):
//!
//! ```text
//! "PGSTREN2" | nonce prefix (16 random bytes) | segment 0 | segment 1 | ...
//! key       = BLAKE3-keyed(object key, nonce prefix)
//! segment i = AES-256-GCM(key, nonce_i, plaintext[i*16 KiB ..]) | tag (16)
//! nonce_i   = i (u32 LE) | final flag (1 on the last segment, else 0) | 0 x 7
//! ```
//!
//! Every segment holds 16 KiB of plaintext but the last, which holds 1 to
//! 16 KiB (0 for an empty object). 16 KiB keeps the tags at 0.1% and what a
//! small range read (a block map) opens beyond what it asked for small. The index in the nonce stops segments from
//! being reordered, the final flag stops truncation at a segment boundary,
//! the random prefix gives every object its own key, so
//! no (key, nonce) pair repeats. AES-256-GCM rather than XChaCha20-Poly1305:
//! with AES-NI it opens about twice as fast here, and restore is bound by
//! it. A range read opens
//! only the segments it covers. Nothing here does I/O.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Tag};
type Nonce = aes_gcm::aead::Nonce<Aes256Gcm>;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::check_magic;
use super::chunk::{hex, IdKey};
use crate::error::{Error, Result};

pub(crate) const MAGIC: &[u8; 8] = b"PGSTREN2";
pub(crate) const PREFIX_LEN: usize = 16;
pub(crate) const HEADER_LEN: usize = MAGIC.len() + PREFIX_LEN;
/// Plaintext bytes per segment.
pub(crate) const SEGMENT: usize = 16 * 1024;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const SEALED_SEGMENT: usize = SEGMENT + TAG_LEN;

const OBJECT_KEY_CONTEXT: &str = "pgstrata 2026-11-22 object sealing key";
const ID_KEY_CONTEXT: &str = "pgstrata 2026-11-22 content id key";
const WRAP_AAD: &[u8] = b"pgstrata master key v1";

/// Segments of an object of `plain` bytes (an empty object has one).
pub(crate) fn segments(plain: u64) -> u64 {
    plain.div_ceil(SEGMENT as u64).max(1)
}

/// Stored size of an object of `plain` bytes.
pub(crate) fn sealed_len(plain: u64) -> u64 {
    HEADER_LEN as u64 + plain + TAG_LEN as u64 * segments(plain)
}

/// Plaintext size of a sealed object of `sealed` bytes, or `None` when no
/// object of this format has that size.
pub(crate) fn plain_len(sealed: u64) -> Option<u64> {
    let body = sealed.checked_sub(HEADER_LEN as u64)?;
    let (full, rem) = (body / SEALED_SEGMENT as u64, body % SEALED_SEGMENT as u64);
    match (full, rem) {
        (0, 0) => None,
        (_, 0) => Some(full * SEGMENT as u64),
        (_, r) if r < TAG_LEN as u64 => None,
        (_, r) => Some(full * SEGMENT as u64 + r - TAG_LEN as u64),
    }
}

/// Offset of segment `i` in the sealed object.
pub(crate) fn segment_offset(i: u64) -> u64 {
    HEADER_LEN as u64 + i * SEALED_SEGMENT as u64
}

/// The repository's master key (zeroed when dropped).
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn generate() -> Result<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        random(k.as_mut())?;
        Ok(MasterKey(k))
    }

    /// The keys derived from this one.
    pub fn keys(&self) -> Keys {
        let object = Zeroizing::new(blake3::derive_key(OBJECT_KEY_CONTEXT, self.0.as_ref()));
        let ids = blake3::derive_key(ID_KEY_CONTEXT, self.0.as_ref());
        Keys {
            sealer: Sealer { object },
            ids: IdKey::Keyed(ids),
        }
    }
}

/// What an unlocked repository works with.
#[derive(Clone)]
pub struct Keys {
    pub sealer: Sealer,
    pub ids: IdKey,
}

/// Fill `buf` from the operating system's random source.
pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::internal(format!("no random numbers: {e}")))
}

/// Holds the object key; hands out an [`ObjectCipher`] per object.
#[derive(Clone)]
pub struct Sealer {
    object: Zeroizing<[u8; 32]>,
}

/// The AEAD of one object: AES-256-GCM under a key derived from the object
/// key and the object's random nonce prefix, so that nonces (segment index
/// and final flag) never repeat under one key.
#[derive(Clone)]
pub struct ObjectCipher {
    cipher: Aes256Gcm,
}

fn nonce(index: u64, last: bool) -> Result<Nonce> {
    let index = u32::try_from(index)
        .map_err(|_| Error::invalid("object too large to seal (more than 2^32 segments)"))?;
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&index.to_le_bytes());
    n[4] = u8::from(last);
    Ok(Nonce::from(n))
}

/// A new object's header: the magic and a fresh random nonce prefix.
pub(crate) fn new_header() -> Result<([u8; HEADER_LEN], [u8; PREFIX_LEN])> {
    let mut prefix = [0u8; PREFIX_LEN];
    random(&mut prefix)?;
    let mut h = [0u8; HEADER_LEN];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[MAGIC.len()..].copy_from_slice(&prefix);
    Ok((h, prefix))
}

/// The nonce prefix of a sealed object's header.
pub(crate) fn parse_header(h: &[u8], what: &str) -> Result<[u8; PREFIX_LEN]> {
    if h.len() < HEADER_LEN {
        return Err(Error::corrupt(what, "truncated (no encryption header)"));
    }
    check_magic(&h[..MAGIC.len()], MAGIC, what)?;
    let mut p = [0u8; PREFIX_LEN];
    p.copy_from_slice(&h[MAGIC.len()..HEADER_LEN]);
    Ok(p)
}

impl Sealer {
    /// The cipher of the object whose header carries `prefix`.
    pub fn object(&self, prefix: &[u8; PREFIX_LEN]) -> ObjectCipher {
        let k = Zeroizing::new(*blake3::keyed_hash(&self.object, prefix).as_bytes());
        ObjectCipher {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*k)),
        }
    }

    /// Seal a whole object.
    pub fn seal(&self, data: &[u8]) -> Result<Vec<u8>> {
        let (h, prefix) = new_header()?;
        let c = self.object(&prefix);
        let mut out = Vec::with_capacity(sealed_len(data.len() as u64) as usize);
        out.extend_from_slice(&h);
        let n = segments(data.len() as u64);
        for i in 0..n {
            let s = (i as usize) * SEGMENT;
            let e = (s + SEGMENT).min(data.len());
            c.seal_segment(i, i + 1 == n, &data[s..e], &mut out)?;
        }
        Ok(out)
    }

    /// Open a whole sealed object; any change, truncation or extension is an
    /// error naming `what`.
    pub fn open(&self, sealed: &[u8], what: &str) -> Result<Vec<u8>> {
        let prefix = parse_header(sealed, what)?;
        let plain = plain_len(sealed.len() as u64)
            .ok_or_else(|| Error::corrupt(what, "truncated (size fits no sealed object)"))?;
        self.object(&prefix).open_segments(
            0,
            sealed[HEADER_LEN..].to_vec(),
            Some(segments(plain)),
            what,
        )
    }
}

impl ObjectCipher {
    /// Append segment `index` of the object, sealed, to `out`.
    pub fn seal_segment(
        &self,
        index: u64,
        last: bool,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let n = nonce(index, last)?;
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_inout_detached(&n, &[], (&mut out[start..]).into())
            .map_err(|_| Error::internal("encryption failed"))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Open one sealed segment in place; `false` when it does not
    /// authenticate as segment `index` with that final flag.
    fn open_in_place(&self, index: u64, last: bool, seg: &mut [u8]) -> Result<bool> {
        let Some(body_len) = seg.len().checked_sub(TAG_LEN) else {
            return Ok(false);
        };
        let n = nonce(index, last)?;
        let (body, tag) = seg.split_at_mut(body_len);
        let tag = Tag::try_from(&*tag).map_err(|_| Error::internal("tag length"))?;
        Ok(self
            .cipher
            .decrypt_inout_detached(&n, &[], body.into(), &tag)
            .is_ok())
    }

    /// Open consecutive sealed segments starting at segment `first`, in
    /// place: the buffer becomes the plaintext. `total` is the object's
    /// segment count when known; otherwise the last segment given may be
    /// either final or not, and both are tried.
    pub fn open_segments(
        &self,
        first: u64,
        buf: Vec<u8>,
        total: Option<u64>,
        what: &str,
    ) -> Result<Vec<u8>> {
        self.open_range(first, buf, total, (0, usize::MAX), None, what)
    }

    /// [`ObjectCipher::open_segments`], keeping only `len` plaintext bytes
    /// from `skip` bytes into the first segment: the tags' gaps and the skip
    /// are closed in one pass. `last_segment`, when given, receives the whole
    /// plaintext of the last segment opened (for a cache of neighbours).
    pub fn open_range(
        &self,
        first: u64,
        mut buf: Vec<u8>,
        total: Option<u64>,
        (skip, len): (usize, usize),
        last_segment: Option<&mut Vec<u8>>,
        what: &str,
    ) -> Result<Vec<u8>> {
        let count = buf.len().div_ceil(SEALED_SEGMENT);
        let mut last_segment = last_segment;
        let mut plain_end = 0;
        for k in 0..count {
            let start = k * SEALED_SEGMENT;
            let end = (start + SEALED_SEGMENT).min(buf.len());
            let i = first + k as u64;
            let seg = &mut buf[start..end];
            let ok = match total {
                Some(t) => self.open_in_place(i, i + 1 == t, seg)?,
                None if k + 1 == count => {
                    // The tag is checked before anything is decrypted, so a
                    // failed try leaves the bytes as they were.
                    self.open_in_place(i, false, seg)? || self.open_in_place(i, true, seg)?
                }
                None => self.open_in_place(i, false, seg)?,
            };
            if !ok {
                return Err(Error::corrupt(
                    what,
                    format!("encrypted segment {i} does not authenticate (damaged, or sealed with another key)"),
                ));
            }
            let mut from = start;
            let body_end = end - TAG_LEN;
            if k + 1 == count {
                if let Some(tail) = last_segment.as_deref_mut() {
                    tail.clear();
                    tail.extend_from_slice(&buf[start..body_end]);
                }
            }
            if k == 0 {
                from = (start + skip).min(body_end);
            }
            if from != plain_end {
                buf.copy_within(from..body_end, plain_end);
            }
            plain_end += body_end - from;
        }
        if plain_end < len && len != usize::MAX {
            return Err(Error::corrupt(what, "truncated"));
        }
        buf.truncate(plain_end.min(len));
        Ok(buf)
    }
}

/// argon2id costs: OWASP's recommended minimum (19 MiB, 2 passes), so that
/// `archive-push`, which unlocks the repository once per WAL segment, stays
/// quick while a guess still costs real memory.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const KEY_FILE_FORMAT: u32 = 1;

/// `pgstrata.key`: the master key wrapped under the passphrase.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyFile {
    pub format: u32,
    pub kdf: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    pub salt: String,
    pub nonce: String,
    pub wrapped: String,
}

fn unhex(s: &str, what: &str) -> Result<Vec<u8>> {
    if s.len() % 2 != 0 {
        return Err(Error::corrupt(what, "odd-length hex"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| Error::corrupt(what, "bad hex"))
        })
        .collect()
}

fn kek(passphrase: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| Error::invalid(format!("argon2id parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|e| Error::invalid(format!("argon2id: {e}")))?;
    Ok(out)
}

impl KeyFile {
    /// Wrap `master` under `passphrase` with a fresh salt and nonce.
    pub fn wrap(master: &MasterKey, passphrase: &[u8]) -> Result<Self> {
        if passphrase.is_empty() {
            return Err(Error::invalid("the passphrase is empty"));
        }
        let mut salt = [0u8; 16];
        random(&mut salt)?;
        let mut n = [0u8; 24];
        random(&mut n)?;
        let k = kek(passphrase, &salt, M_COST_KIB, T_COST, P_COST)?;
        let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*k));
        let mut buf = master.0.to_vec();
        let tag = cipher
            .encrypt_inout_detached(&XNonce::from(n), WRAP_AAD, buf.as_mut_slice().into())
            .map_err(|_| Error::internal("key wrapping failed"))?;
        buf.extend_from_slice(&tag);
        Ok(KeyFile {
            format: KEY_FILE_FORMAT,
            kdf: "argon2id".into(),
            m_cost_kib: M_COST_KIB,
            t_cost: T_COST,
            p_cost: P_COST,
            salt: hex(&salt),
            nonce: hex(&n),
            wrapped: hex(&buf),
        })
    }

    /// The master key, or a refusal when the passphrase is wrong.
    pub fn unwrap(&self, passphrase: &[u8], what: &str) -> Result<MasterKey> {
        let salt = unhex(&self.salt, what)?;
        let n: [u8; 24] = unhex(&self.nonce, what)?
            .try_into()
            .map_err(|_| Error::corrupt(what, "nonce is not 24 bytes"))?;
        let mut wrapped = unhex(&self.wrapped, what)?;
        if wrapped.len() != 32 + TAG_LEN {
            return Err(Error::corrupt(what, "wrapped key is not 48 bytes"));
        }
        let k = kek(passphrase, &salt, self.m_cost_kib, self.t_cost, self.p_cost)?;
        let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*k));
        let (body, tag) = wrapped.split_at_mut(32);
        let tag = Tag::try_from(&*tag).map_err(|_| Error::internal("tag length"))?;
        if cipher
            .decrypt_inout_detached(&XNonce::from(n), WRAP_AAD, body.into(), &tag)
            .is_err()
        {
            return Err(Error::refused(format!(
                "wrong passphrase: it does not unlock {what}"
            )));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(body);
        body.fill(0);
        Ok(MasterKey(key))
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::internal(format!("key file: {e}")))?;
        v.push(b'\n');
        Ok(v)
    }

    pub fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(what, format!("not a key file: {e}")))?;
        if probe.format > KEY_FILE_FORMAT {
            return Err(Error::NewerFormat {
                what: what.to_string(),
                found: probe.format,
                supported: KEY_FILE_FORMAT,
            });
        }
        let k: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(what, format!("not a key file: {e}")))?;
        if k.kdf != "argon2id" {
            return Err(Error::corrupt(what, format!("unknown kdf {:?}", k.kdf)));
        }
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        MasterKey::generate().unwrap().keys().sealer
    }

    #[test]
    fn sizes() {
        for p in [0u64, 1, 65535, 65536, 65537, 3 * 65536, 1_000_000] {
            assert_eq!(plain_len(sealed_len(p)), Some(p), "{p}");
        }
        assert_eq!(plain_len(10), None);
        assert_eq!(plain_len(HEADER_LEN as u64), None);
        assert_eq!(plain_len(HEADER_LEN as u64 + 5), None);
    }

    #[test]
    fn seal_open_and_tamper() {
        let s = sealer();
        for len in [0usize, 10, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let sealed = s.seal(&data).unwrap();
            assert_eq!(sealed.len() as u64, sealed_len(len as u64));
            assert_eq!(s.open(&sealed, "x").unwrap(), data);
            for pos in [0, 9, HEADER_LEN, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[pos] ^= 1;
                assert!(s.open(&bad, "x").is_err(), "len {len} pos {pos}");
            }
            if len > SEGMENT {
                // Cut at a segment boundary: the final flag catches it.
                let cut = segment_offset(1) as usize;
                assert!(s.open(&sealed[..cut], "x").is_err());
            }
        }
        // Another key cannot open it.
        let sealed = s.seal(b"secret").unwrap();
        assert!(sealer().open(&sealed, "x").is_err());
    }

    #[test]
    fn open_middle_segments() {
        let s = sealer();
        let data: Vec<u8> = (0..4 * SEGMENT + 100).map(|i| (i % 251) as u8).collect();
        let sealed = s.seal(&data).unwrap();
        let c = s.object(&parse_header(&sealed, "x").unwrap());
        let (a, b) = (segment_offset(1) as usize, segment_offset(3) as usize);
        let got = c
            .open_segments(1, sealed[a..b].to_vec(), None, "x")
            .unwrap();
        assert_eq!(got, &data[SEGMENT..3 * SEGMENT]);
        let tail = c.open_segments(3, sealed[b..].to_vec(), None, "x").unwrap();
        assert_eq!(tail, &data[3 * SEGMENT..]);
        // A range with a skip, and the last segment handed back whole.
        let mut last = Vec::new();
        let part = c
            .open_range(
                1,
                sealed[a..b].to_vec(),
                Some(5),
                (10, SEGMENT),
                Some(&mut last),
                "x",
            )
            .unwrap();
        assert_eq!(part, &data[SEGMENT + 10..2 * SEGMENT + 10]);
        assert_eq!(last, &data[2 * SEGMENT..3 * SEGMENT]);
        // Segments presented under the wrong index do not open.
        assert!(c
            .open_segments(2, sealed[a..b].to_vec(), None, "x")
            .is_err());
        // Nor under another object's key.
        let other = s.object(&[7; PREFIX_LEN]);
        assert!(other
            .open_segments(1, sealed[a..b].to_vec(), None, "x")
            .is_err());
    }

    #[test]
    fn key_file_round_trip() {
        let m = MasterKey::generate().unwrap();
        let kf = KeyFile::wrap(&m, b"correct horse").unwrap();
        let back = KeyFile::decode(&kf.encode().unwrap(), "k").unwrap();
        let m2 = back.unwrap(b"correct horse", "k").unwrap();
        assert_eq!(m.0.as_ref(), m2.0.as_ref());
        assert!(matches!(back.unwrap(b"wrong", "k"), Err(Error::Refused(_))));
        assert!(KeyFile::wrap(&m, b"").is_err());
        assert!(KeyFile::decode(b"{}", "k").is_err());
        let newer = br#"{"format": 9}"#;
        assert!(matches!(
            KeyFile::decode(newer, "k"),
            Err(Error::NewerFormat { .. })
        ));
    }
}
