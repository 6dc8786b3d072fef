//! The latest Raft snapshot on disk, one file per directory: `snapshot.bin`.
//!
//! The state machine lives in memory and is rebuilt on restart from this snapshot plus the
//! log after it. A snapshot is written to a temp file in the same directory, fsynced,
//! renamed over `snapshot.bin`, and the directory is fsynced: a crash leaves either the old
//! snapshot or the new one, never a mix. The metadata sits in the same file as the data, so
//! both change with that one rename.
//!
//! File layout (integers little-endian):
//! `"RSWSNAP1"`, meta length `u64`, meta (JSON), data length `u64`, data,
//! SHA-256 of everything before it.
//!
//! All functions block; call them from `spawn_blocking` in async code.
//!
//! openraft 0.9 builds snapshots in a task of their own, so a `save` from a build can run
//! while `install_snapshot` saves. Each save writes its own temp file, and a save never
//! replaces a snapshot that covers more of the log than its own; callers should still
//! serialize saves to one directory (one lock around `save`), because the check and the
//! rename are two steps.

use openraft::{RaftTypeConfig, SnapshotMeta};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// The snapshot's file name inside its directory.
pub const FILE_NAME: &str = "snapshot.bin";
const TEMP_PREFIX: &str = ".snapshot.bin.";
const TEMP_SUFFIX: &str = ".tmp";
const MAGIC: &[u8; 8] = b"RSWSNAP1";
const DIGEST_LEN: usize = 32;
/// Refuse absurd metadata lengths before allocating for them.
const MAX_META_LEN: u64 = 64 << 20;

/// Reads and writes the latest snapshot of a Raft group whose types are `C`.
pub struct SnapshotFile<C>(PhantomData<fn() -> C>);

type Meta<C> = SnapshotMeta<<C as RaftTypeConfig>::NodeId, <C as RaftTypeConfig>::Node>;

impl<C: RaftTypeConfig> SnapshotFile<C> {
    /// Durably replaces the snapshot in `dir` (created if missing) with `meta` and `data`.
    ///
    /// Returns once the new snapshot, and its directory entry, are on disk. If the snapshot
    /// already there covers a later log id than `meta`, it is kept and this is a no-op.
    pub fn save(dir: &Path, meta: &Meta<C>, data: &[u8]) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let meta_json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{:016x}{TEMP_SUFFIX}",
            rand::random::<u64>()
        ));
        let res = Self::write_and_rename(dir, &temp, meta, &meta_json, data);
        if res.is_err() {
            // Best effort: the temp file is garbage either way, and `load` ignores it.
            let _ = fs::remove_file(&temp);
        }
        res
    }

    fn write_and_rename(
        dir: &Path,
        temp: &Path,
        meta: &Meta<C>,
        meta_json: &[u8],
        data: &[u8],
    ) -> io::Result<()> {
        let file = File::options().write(true).create_new(true).open(temp)?;
        let mut out = HashingWriter {
            inner: BufWriter::new(file),
            hasher: Sha256::new(),
        };
        out.write_all(MAGIC)?;
        out.write_all(&len_u64(meta_json.len()).to_le_bytes())?;
        out.write_all(meta_json)?;
        out.write_all(&len_u64(data.len()).to_le_bytes())?;
        out.write_all(data)?;
        let digest = out.hasher.finalize();
        let mut inner = out.inner;
        inner.write_all(&digest)?;
        let file = inner.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);

        let path = dir.join(FILE_NAME);
        if let Some(existing) = read_meta_only::<C>(&path) {
            if existing.last_log_id > meta.last_log_id {
                tracing::info!(
                    snapshot.kept = ?existing.last_log_id,
                    snapshot.older = ?meta.last_log_id,
                    "not replacing a snapshot with an older one"
                );
                fs::remove_file(temp)?;
                return Ok(());
            }
        }
        fs::rename(temp, &path)?;
        File::open(dir)?.sync_all()
    }

    /// The snapshot in `dir`, or `None` if there is none (no file, or no directory).
    ///
    /// Temp files left by an interrupted `save` are ignored. A `snapshot.bin` that fails
    /// its checks (magic, lengths, checksum, metadata) is an `InvalidData` error, not `None`:
    /// the log before it may be purged, so it must not be silently skipped.
    pub fn load(dir: &Path) -> io::Result<Option<(Meta<C>, Vec<u8>)>> {
        let path = dir.join(FILE_NAME);
        let mut buf = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut buf)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot {}: {what}", path.display()),
            )
        };

        let body_len = buf
            .len()
            .checked_sub(DIGEST_LEN)
            .ok_or_else(|| bad("too short"))?;
        let (body, digest) = buf.split_at(body_len);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad("checksum mismatch"));
        }
        let mut rest = body
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| bad("not a snapshot file"))?;
        let meta_json = take_chunk(&mut rest).ok_or_else(|| bad("truncated metadata"))?;
        let meta: Meta<C> =
            serde_json::from_slice(meta_json).map_err(|e| bad(&format!("metadata: {e}")))?;
        let data_len = take_chunk(&mut rest)
            .ok_or_else(|| bad("truncated data"))?
            .len();
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }

        // The data ends where the digest starts; reuse the buffer for it.
        let data_start = body_len - data_len;
        buf.truncate(body_len);
        buf.drain(..data_start);
        Ok(Some((meta, buf)))
    }

    /// Removes temp files left in `dir` by saves that a crash interrupted; returns how many.
    ///
    /// Call it at startup only, before any `save` can run: it would remove the temp file of
    /// a save in progress.
    pub fn remove_temp_files(dir: &Path) -> io::Result<usize> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The path of the snapshot file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }
}

/// The metadata of the snapshot at `path`, read without the data; `None` if there is no
/// readable one (then any snapshot may replace it).
fn read_meta_only<C: RaftTypeConfig>(path: &Path) -> Option<Meta<C>> {
    let mut f = File::open(path).ok()?;
    let mut head = [0u8; 16];
    f.read_exact(&mut head).ok()?;
    let (magic, len) = head.split_at(MAGIC.len());
    if magic != MAGIC {
        return None;
    }
    let len = u64::from_le_bytes(len.try_into().ok()?);
    if len > MAX_META_LEN {
        return None;
    }
    let mut meta = vec![0u8; usize::try_from(len).ok()?];
    f.read_exact(&mut meta).ok()?;
    serde_json::from_slice(&meta).ok()
}

/// Splits a `u64`-length-prefixed chunk off the front of `rest`.
fn take_chunk<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    if len > tail.len() {
        return None;
    }
    let (chunk, tail) = tail.split_at(len);
    *rest = tail;
    Some(chunk)
}

fn len_u64(len: usize) -> u64 {
    // usize is at most 64 bits on every target rswarm builds for.
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Writes through to `inner` and hashes what it wrote.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{BasicNode, LogId, Membership, StoredMembership};
    use std::collections::BTreeSet;
    use std::io::Cursor;

    openraft::declare_raft_types!(TestConfig);

    type Sf = SnapshotFile<TestConfig>;

    fn meta(index: u64) -> SnapshotMeta<u64, BasicNode> {
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        let log_id = |i| LogId::new(openraft::CommittedLeaderId::new(2, 1), i);
        SnapshotMeta {
            last_log_id: Some(log_id(index)),
            last_membership: StoredMembership::new(
                Some(log_id(1)),
                Membership::new(vec![voters], None),
            ),
            snapshot_id: format!("2-1-{index}"),
        }
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != FILE_NAME)
            .collect()
    }

    #[test]
    fn load_without_snapshot_is_none() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(Sf::load(dir.path())?.is_none());
        assert!(Sf::load(&dir.path().join("missing"))?.is_none());
        Ok(())
    }

    #[test]
    fn save_then_load_round_trips_and_replaces() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let snaps = dir.path().join("snapshots");
        Sf::save(&snaps, &meta(10), b"first")?;
        assert_eq!(Sf::load(&snaps)?, Some((meta(10), b"first".to_vec())));

        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        Sf::save(&snaps, &meta(20), &big)?;
        assert_eq!(Sf::load(&snaps)?, Some((meta(20), big)));

        Sf::save(&snaps, &meta(20), b"")?;
        assert_eq!(Sf::load(&snaps)?, Some((meta(20), Vec::new())));
        assert!(temp_files(&snaps).is_empty(), "{:?}", temp_files(&snaps));
        Ok(())
    }

    #[test]
    fn an_older_snapshot_does_not_replace_a_newer_one() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        Sf::save(dir.path(), &meta(20), b"newer")?;
        Sf::save(dir.path(), &meta(10), b"older")?;
        assert_eq!(Sf::load(dir.path())?, Some((meta(20), b"newer".to_vec())));
        assert!(temp_files(dir.path()).is_empty());
        Ok(())
    }

    #[test]
    fn a_torn_temp_file_is_ignored_and_removable() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        // A crash during the first save ever: only a partial temp file.
        let torn = dir
            .path()
            .join(format!("{TEMP_PREFIX}00000000deadbeef{TEMP_SUFFIX}"));
        fs::write(&torn, &b"RSWSNAP1\x05\0\0"[..])?;
        assert!(Sf::load(dir.path())?.is_none());

        Sf::save(dir.path(), &meta(10), b"good")?;
        // A crash during a later save: torn temp beside the good snapshot.
        let mut full = Vec::new();
        File::open(Sf::path(dir.path()))?.read_to_end(&mut full)?;
        let torn2 = dir
            .path()
            .join(format!("{TEMP_PREFIX}0000000000c0ffee{TEMP_SUFFIX}"));
        fs::write(&torn2, &full[..full.len() / 2])?;
        assert_eq!(Sf::load(dir.path())?, Some((meta(10), b"good".to_vec())));

        assert_eq!(Sf::remove_temp_files(dir.path())?, 2);
        assert!(temp_files(dir.path()).is_empty());
        assert_eq!(Sf::load(dir.path())?, Some((meta(10), b"good".to_vec())));
        assert_eq!(Sf::remove_temp_files(&dir.path().join("missing"))?, 0);
        Ok(())
    }

    #[test]
    fn a_damaged_snapshot_is_an_error() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        Sf::save(dir.path(), &meta(10), b"some state")?;
        let path = Sf::path(dir.path());
        let good = fs::read(&path)?;

        let mut flipped = good.clone();
        flipped[30] ^= 0x40;
        let truncated = good[..good.len() - 3].to_vec();
        let mut trailing = good.clone();
        trailing.push(0);
        for (what, bytes) in [
            ("flipped", flipped),
            ("truncated", truncated),
            ("trailing", trailing),
            ("empty", Vec::new()),
        ] {
            fs::write(&path, &bytes)?;
            let err = Sf::load(dir.path()).expect_err(what);
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        }

        // A file with a valid checksum but a wrong length inside is refused too.
        let mut body = MAGIC.to_vec();
        body.extend(1000u64.to_le_bytes());
        body.extend(b"{}");
        let digest = Sha256::digest(&body);
        body.extend(digest);
        fs::write(&path, &body)?;
        let err = Sf::load(dir.path()).expect_err("bad length");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        Ok(())
    }
}
