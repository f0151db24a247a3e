//! Snapshot files: a consistent copy of every table.
//!
//! Layout: `MAGIC` (8 bytes), format `u32` LE, then records, each a `u32` LE
//! length and a postcard [`Rec`], the last one `Rec::End { records }`, then
//! the SHA-256 of everything before it (32 bytes). Restore reads and checks
//! the whole file (magic, checksum, structure, meta) before it creates the
//! database, which it builds under a temporary name and renames into place,
//! so a failed restore never leaves a half-loaded store behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::{self, FORMAT, KV, LATEST, LEASE_KEYS, LEASES, LOG, META, storage};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"SKIFFSNP";
const SNAP_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
enum Rec {
    Meta {
        key: String,
        value: u64,
    },
    Kv {
        key: Vec<u8>,
        rev: u64,
        record: Vec<u8>,
    },
    Latest {
        key: Vec<u8>,
        record: Vec<u8>,
    },
    Log {
        rev: u64,
        keys: Vec<u8>,
    },
    Lease {
        id: u64,
        ttl: u64,
    },
    LeaseKey {
        id: u64,
        key: Vec<u8>,
    },
    End {
        records: u64,
    },
    /// The Raft state of a replicated store (last, so older files still
    /// decode).
    Raft {
        value: Vec<u8>,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("snapshot: {reason}"),
    }
}

struct Out<W: Write> {
    w: W,
    hash: Sha256,
    records: u64,
}

impl<W: Write> Out<W> {
    fn raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.w.write_all(b)
    }
    fn rec(&mut self, r: &Rec) -> std::io::Result<()> {
        let b = postcard::to_stdvec(r).expect("snapshot record encodes");
        let len = u32::try_from(b.len()).map_err(std::io::Error::other)?;
        self.raw(&len.to_le_bytes())?;
        self.raw(&b)?;
        self.records += 1;
        Ok(())
    }
}

/// Write a snapshot of the state as of one read transaction; returns the
/// Raft record it holds, if any.
pub(crate) fn write(db: &Database, path: &Path) -> Result<Option<Vec<u8>>> {
    let tmp = tmp_path(path);
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let r = db.begin_read().map_err(storage)?;
    let mut out = Out {
        w: std::io::BufWriter::new(file),
        hash: Sha256::new(),
        records: 0,
    };
    let res = (|| -> Result<Option<Vec<u8>>> {
        let e = io(&tmp);
        out.raw(MAGIC).map_err(&e)?;
        out.raw(&SNAP_FORMAT.to_le_bytes()).map_err(&e)?;
        for x in r
            .open_table(META)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = x.map_err(storage)?;
            out.rec(&Rec::Meta {
                key: k.value().to_string(),
                value: v.value(),
            })
            .map_err(&e)?;
        }
        for x in r.open_table(KV).map_err(storage)?.iter().map_err(storage)? {
            let (k, v) = x.map_err(storage)?;
            let (key, rev) = k.value();
            out.rec(&Rec::Kv {
                key: key.to_vec(),
                rev,
                record: v.value().to_vec(),
            })
            .map_err(&e)?;
        }
        for x in r
            .open_table(LATEST)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = x.map_err(storage)?;
            out.rec(&Rec::Latest {
                key: k.value().to_vec(),
                record: v.value().to_vec(),
            })
            .map_err(&e)?;
        }
        for x in r
            .open_table(LOG)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = x.map_err(storage)?;
            out.rec(&Rec::Log {
                rev: k.value(),
                keys: v.value().to_vec(),
            })
            .map_err(&e)?;
        }
        for x in r
            .open_table(LEASES)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = x.map_err(storage)?;
            out.rec(&Rec::Lease {
                id: k.value(),
                ttl: v.value(),
            })
            .map_err(&e)?;
        }
        for x in r
            .open_table(LEASE_KEYS)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, _) = x.map_err(storage)?;
            let (id, key) = k.value();
            out.rec(&Rec::LeaseKey {
                id,
                key: key.to_vec(),
            })
            .map_err(&e)?;
        }
        let raft = state::raft_applied(&r)?;
        if let Some(value) = &raft {
            out.rec(&Rec::Raft {
                value: value.clone(),
            })
            .map_err(&e)?;
        }
        let records = out.records;
        out.rec(&Rec::End { records }).map_err(&e)?;
        let digest = out.hash.clone().finalize();
        out.w.write_all(&digest).map_err(&e)?;
        let file = out.w.into_inner().map_err(|x| e(x.into_error()))?;
        file.sync_all().map_err(io(&tmp))?;
        Ok(raft)
    })();
    let raft = match res {
        Ok(raft) => raft,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(raft)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Parse and verify a snapshot file completely.
fn read(path: &Path) -> Result<Vec<Rec>> {
    let data = std::fs::read(path).map_err(io(path))?;
    parse(path, &data)
}

/// What [`inspect`] found in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Records (key versions, live keys, log entries, leases...).
    pub records: u64,
    /// The store's revision and compaction revision when it was taken.
    pub revision: crate::Revision,
    pub compacted: crate::Revision,
}

/// Verifies a snapshot's bytes as restore does before writing anything
/// (magic, checksum, every record, the end record, the store format).
pub fn inspect(data: &[u8]) -> Result<SnapshotInfo> {
    let recs = parse(Path::new("<snapshot>"), data)?;
    let mut info = SnapshotInfo {
        records: recs.len() as u64,
        revision: 0,
        compacted: 0,
    };
    for r in &recs {
        match r {
            Rec::Meta { key, value } if key == "compacted" => info.compacted = *value,
            Rec::Log { rev, .. } => info.revision = info.revision.max(*rev),
            _ => {}
        }
    }
    info.revision = info.revision.max(info.compacted);
    Ok(info)
}

/// The Raft record of a verified snapshot, if it has one.
pub(crate) fn raft_record(data: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(parse(Path::new("<snapshot>"), data)?
        .into_iter()
        .find_map(|r| match r {
            Rec::Raft { value } => Some(value),
            _ => None,
        }))
}

fn parse(path: &Path, data: &[u8]) -> Result<Vec<Rec>> {
    let head = MAGIC.len() + 4;
    if data.len() < head + 32 {
        return Err(corrupt(path, format!("truncated ({} bytes)", data.len())));
    }
    if &data[..MAGIC.len()] != MAGIC {
        return Err(corrupt(path, "not a skiff snapshot (bad magic)"));
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err(corrupt(path, "checksum mismatch (truncated or modified)"));
    }
    let fmt = u32::from_le_bytes(body[MAGIC.len()..head].try_into().expect("4 bytes"));
    if fmt != SNAP_FORMAT {
        return Err(corrupt(
            path,
            format!("format {fmt}, expected {SNAP_FORMAT}"),
        ));
    }
    let mut recs = Vec::new();
    let mut rest = &body[head..];
    let mut ended = false;
    while !rest.is_empty() {
        if ended {
            return Err(corrupt(path, "data after end record"));
        }
        if rest.len() < 4 {
            return Err(corrupt(path, "truncated record length"));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        rest = &rest[4..];
        if rest.len() < len {
            return Err(corrupt(path, "truncated record"));
        }
        let rec: Rec = postcard::from_bytes(&rest[..len])
            .map_err(|e| corrupt(path, format!("bad record {}: {e}", recs.len())))?;
        rest = &rest[len..];
        if let Rec::End { records } = rec {
            if records != recs.len() as u64 {
                return Err(corrupt(path, "record count mismatch"));
            }
            ended = true;
        } else {
            recs.push(rec);
        }
    }
    if !ended {
        return Err(corrupt(path, "no end record"));
    }
    let format = recs.iter().find_map(|r| match r {
        Rec::Meta { key, value } if key == "format" => Some(*value),
        _ => None,
    });
    if format != Some(state::FORMAT) {
        return Err(corrupt(
            path,
            format!("store format {format:?}, expected {FORMAT}"),
        ));
    }
    Ok(recs)
}

pub(crate) fn restore(snapshot: &Path, db_path: &Path) -> Result<()> {
    if db_path.exists() {
        return Err(Error::InvalidArgument(format!(
            "{}: exists; restore creates a new store",
            db_path.display()
        )));
    }
    let recs = read(snapshot)?;
    let tmp = tmp_path(db_path);
    let _ = std::fs::remove_file(&tmp);
    let res = (|| -> Result<()> {
        let db = Database::create(&tmp).map_err(storage)?;
        let w = db.begin_write().map_err(storage)?;
        {
            let mut meta = w.open_table(META).map_err(storage)?;
            let mut kv = w.open_table(KV).map_err(storage)?;
            let mut latest = w.open_table(LATEST).map_err(storage)?;
            let mut log = w.open_table(LOG).map_err(storage)?;
            let mut leases = w.open_table(LEASES).map_err(storage)?;
            let mut lease_keys = w.open_table(LEASE_KEYS).map_err(storage)?;
            let mut raft = w.open_table(state::RAFT).map_err(storage)?;
            for r in &recs {
                match r {
                    Rec::Meta { key, value } => meta.insert(key.as_str(), *value).map(drop),
                    Rec::Kv { key, rev, record } => kv
                        .insert((key.as_slice(), *rev), record.as_slice())
                        .map(drop),
                    Rec::Latest { key, record } => {
                        latest.insert(key.as_slice(), record.as_slice()).map(drop)
                    }
                    Rec::Log { rev, keys } => log.insert(*rev, keys.as_slice()).map(drop),
                    Rec::Lease { id, ttl } => leases.insert(*id, *ttl).map(drop),
                    Rec::LeaseKey { id, key } => {
                        lease_keys.insert((*id, key.as_slice()), ()).map(drop)
                    }
                    Rec::Raft { value } => {
                        raft.insert(state::RAFT_APPLIED, value.as_slice()).map(drop)
                    }
                    Rec::End { .. } => Ok(()),
                }
                .map_err(storage)?;
            }
        }
        w.commit().map_err(storage)?;
        drop(db);
        // Same checks as a normal open, before the file takes its real name.
        let (db, _, _) = state::open_db(&tmp, true).map_err(|e| match e {
            Error::Corrupt { reason, .. } => corrupt(snapshot, reason),
            e => e,
        })?;
        drop(db);
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, db_path).map_err(io(db_path))?;
    Ok(())
}
