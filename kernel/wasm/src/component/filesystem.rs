//! wasi:filesystem over the container's [`Volume`]s: each volume is a
//! preopen at its mount path. Every operation is the one preview 1 uses
//! (`crate::fs`); this layer only checks descriptor kinds and flags and maps
//! [`FsError`] to `error-code`.
//!
//! What the guest can make the node hold is bounded: descriptors and
//! streams live in the [`MAX_FDS`](crate::MAX_FDS)-capped table, the paths
//! they keep are charged to the memory limit like preview 1's fds, reads
//! return at most [`MAX_GATHER`] bytes and directory streams keep a cursor,
//! not a copy of the listing.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Bound;

use wasmtime::component::Resource;
use wasmtime_wasi_io::bytes::Bytes;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, StreamError, StreamResult,
};

use super::Ctx;
use super::bindings::wasi::filesystem::{preopens, types};
use crate::fs::{self, FsError, Kind, Open, Volume};
use crate::wasi::{MAX_GATHER, path_cost};
use types::{DescriptorFlags, DescriptorType, ErrorCode, Filesize};

/// An open file or directory of one of the container's volumes.
pub struct Descriptor {
    vol: usize,
    path: Path,
    kind: Kind,
    flags: DescriptorFlags,
}

/// A resolved path inside a volume, shared by a descriptor and the streams
/// made from it (which may outlive it); see [`Ctx::hold`].
type Path = Arc<Vec<String>>;

/// `read-directory`'s stream: the name last returned, so each call looks up
/// the next entry in the live directory.
pub struct DirectoryEntryStream {
    volume: Volume,
    path: Path,
    after: Option<String>,
}

type FsResult<T> = wasmtime::Result<Result<T, ErrorCode>>;

/// A path resolved against a directory descriptor: the volume's index, the
/// volume and the path.
type Resolved<'a> = (usize, &'a Volume, Vec<String>);

fn code(e: FsError) -> ErrorCode {
    match e {
        FsError::NotFound => ErrorCode::NoEntry,
        FsError::Exists => ErrorCode::Exist,
        FsError::NotDir => ErrorCode::NotDirectory,
        FsError::IsDir => ErrorCode::IsDirectory,
        FsError::NotEmpty => ErrorCode::NotEmpty,
        FsError::ReadOnly => ErrorCode::ReadOnly,
        FsError::NoSpace => ErrorCode::InsufficientSpace,
        FsError::Escapes | FsError::NotPermitted => ErrorCode::NotPermitted,
        FsError::Invalid => ErrorCode::Invalid,
        FsError::Overflow => ErrorCode::Overflow,
        FsError::NameTooLong => ErrorCode::NameTooLong,
    }
}

impl Ctx {
    /// Keeps `path` for a new descriptor, charged to the memory limit until
    /// the descriptor and every stream made from it are gone.
    fn hold(&mut self, path: Vec<String>) -> Result<Path, ErrorCode> {
        self.release_paths();
        if !self.limits.charge(path_cost(&path)) {
            return Err(ErrorCode::InsufficientMemory);
        }
        let path = Arc::new(path);
        self.paths.push(path.clone());
        Ok(path)
    }

    /// Gives back the charge of every path only `paths` still holds. Runs
    /// when a descriptor is opened or dropped (streams are dropped by
    /// wasmtime-wasi-io, so theirs is noticed at the next of those).
    fn release_paths(&mut self) {
        let limits = &mut self.limits;
        self.paths.retain(|p| {
            let live = Arc::strong_count(p) > 1;
            if !live {
                limits.uncharge(path_cost(p));
            }
            live
        });
    }

    fn descriptor(&self, d: &Resource<Descriptor>) -> wasmtime::Result<&Descriptor> {
        Ok(self.table.get(d)?)
    }

    /// A file descriptor opened with `flag`, and its volume.
    fn file(
        &self,
        d: &Resource<Descriptor>,
        flag: DescriptorFlags,
    ) -> FsResult<(&Descriptor, &Volume)> {
        let desc = self.descriptor(d)?;
        Ok(match desc.kind {
            Kind::Dir => Err(ErrorCode::IsDirectory),
            Kind::File if !desc.flags.contains(flag) => Err(ErrorCode::BadDescriptor),
            Kind::File => Ok((desc, &self.volumes[desc.vol])),
        })
    }

    /// `path` resolved against directory descriptor `d`: its volume index,
    /// the volume and the path.
    fn at(&self, d: &Resource<Descriptor>, path: &str) -> FsResult<Resolved<'_>> {
        let desc = self.descriptor(d)?;
        if desc.kind != Kind::Dir {
            return Ok(Err(ErrorCode::NotDirectory));
        }
        Ok(fs::resolve(&desc.path, path)
            .map(|p| (desc.vol, &self.volumes[desc.vol], p))
            .map_err(code))
    }

    fn push_descriptor(
        &mut self,
        vol: usize,
        path: Vec<String>,
        kind: Kind,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let path = match self.hold(path) {
            Ok(path) => path,
            Err(e) => return Ok(Err(e)),
        };
        let descriptor = Descriptor {
            vol,
            path,
            kind,
            flags,
        };
        Ok(Ok(self.table.push(descriptor)?))
    }
}

/// What a directory descriptor on `volume` may do.
fn dir_flags(volume: &Volume) -> DescriptorFlags {
    if volume.read_only {
        DescriptorFlags::READ
    } else {
        DescriptorFlags::READ | DescriptorFlags::MUTATE_DIRECTORY
    }
}

fn descriptor_type(kind: Kind) -> DescriptorType {
    match kind {
        Kind::File => DescriptorType::RegularFile,
        Kind::Dir => DescriptorType::Directory,
    }
}

fn stat(volume: &Volume, path: &[String]) -> Result<types::DescriptorStat, FsError> {
    let (kind, size) = volume.stat(path)?;
    Ok(types::DescriptorStat {
        type_: descriptor_type(kind),
        link_count: 1,
        size,
        // Volumes keep no times.
        data_access_timestamp: None,
        data_modification_timestamp: None,
        status_change_timestamp: None,
    })
}

/// Stable for a path of a volume, like preview 1's inode numbers.
fn hash(vol: usize, path: &[String]) -> types::MetadataHashValue {
    types::MetadataHashValue {
        lower: fs::inode(vol, path),
        upper: vol as u64,
    }
}

impl preopens::Host for Ctx {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let mut dirs = Vec::with_capacity(self.volumes.len());
        for vol in 0..self.volumes.len() {
            let flags = dir_flags(&self.volumes[vol]);
            let d = self
                .push_descriptor(vol, Vec::new(), Kind::Dir, flags)?
                .map_err(|e| wasmtime::format_err!("preopening a volume: {e:?}"))?;
            dirs.push((d, self.volumes[vol].mount_path.clone()));
        }
        Ok(dirs)
    }
}

impl types::Host for Ctx {
    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime_wasi_io::streams::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(self
            .table
            .get(&err)?
            .downcast_ref::<FsError>()
            .map(|e| code(*e)))
    }
}

impl types::HostDescriptor for Ctx {
    fn read_via_stream(
        &mut self,
        d: Resource<Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        let reader = match self.file(&d, DescriptorFlags::READ)? {
            Ok((desc, volume)) => FileReader {
                volume: volume.clone(),
                path: desc.path.clone(),
                pos: offset,
            },
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(self.table.push(Box::new(reader) as DynInputStream)?))
    }

    fn write_via_stream(
        &mut self,
        d: Resource<Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.writer(&d, Some(offset))
    }

    fn append_via_stream(
        &mut self,
        d: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.writer(&d, None)
    }

    fn advise(
        &mut self,
        d: Resource<Descriptor>,
        _offset: Filesize,
        _length: Filesize,
        _advice: types::Advice,
    ) -> FsResult<()> {
        self.descriptor(&d)?;
        Ok(Ok(()))
    }

    /// Volumes live in memory: there is nothing to sync.
    fn sync_data(&mut self, d: Resource<Descriptor>) -> FsResult<()> {
        self.descriptor(&d)?;
        Ok(Ok(()))
    }

    fn get_flags(&mut self, d: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        Ok(Ok(self.descriptor(&d)?.flags))
    }

    fn get_type(&mut self, d: Resource<Descriptor>) -> FsResult<DescriptorType> {
        Ok(Ok(descriptor_type(self.descriptor(&d)?.kind)))
    }

    fn set_size(&mut self, d: Resource<Descriptor>, size: Filesize) -> FsResult<()> {
        Ok(self
            .file(&d, DescriptorFlags::WRITE)?
            .and_then(|(desc, volume)| volume.set_size(&desc.path, size).map_err(code)))
    }

    fn set_times(
        &mut self,
        d: Resource<Descriptor>,
        _atime: types::NewTimestamp,
        _mtime: types::NewTimestamp,
    ) -> FsResult<()> {
        self.descriptor(&d)?;
        Ok(Err(ErrorCode::Unsupported))
    }

    /// At most [`MAX_GATHER`] bytes, whatever `length` asks for.
    fn read(
        &mut self,
        d: Resource<Descriptor>,
        length: Filesize,
        offset: Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        let max = usize::try_from(length)
            .unwrap_or(usize::MAX)
            .min(MAX_GATHER);
        Ok(self.file(&d, DescriptorFlags::READ)?.map(|(desc, volume)| {
            volume.read_at(&desc.path, offset, |data| {
                let n = data.len().min(max);
                (data[..n].to_vec(), n == data.len())
            })
        }))
    }

    fn write(
        &mut self,
        d: Resource<Descriptor>,
        buffer: Vec<u8>,
        offset: Filesize,
    ) -> FsResult<Filesize> {
        Ok(self
            .file(&d, DescriptorFlags::WRITE)?
            .and_then(|(desc, volume)| {
                let n = volume.write_at(&desc.path, Some(offset), &buffer);
                n.map(|n| n as Filesize).map_err(code)
            }))
    }

    fn read_directory(
        &mut self,
        d: Resource<Descriptor>,
    ) -> FsResult<Resource<DirectoryEntryStream>> {
        let desc = self.descriptor(&d)?;
        if desc.kind != Kind::Dir {
            return Ok(Err(ErrorCode::NotDirectory));
        }
        let stream = DirectoryEntryStream {
            volume: self.volumes[desc.vol].clone(),
            path: desc.path.clone(),
            after: None,
        };
        Ok(Ok(self.table.push(stream)?))
    }

    fn sync(&mut self, d: Resource<Descriptor>) -> FsResult<()> {
        self.sync_data(d)
    }

    fn create_directory_at(&mut self, d: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.modify_at(&d, &path, Volume::create_dir)
    }

    fn stat(&mut self, d: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        let desc = self.descriptor(&d)?;
        Ok(stat(&self.volumes[desc.vol], &desc.path).map_err(code))
    }

    fn stat_at(
        &mut self,
        d: Resource<Descriptor>,
        _flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        Ok(self
            .at(&d, &path)?
            .and_then(|(_, volume, path)| stat(volume, &path).map_err(code)))
    }

    fn set_times_at(
        &mut self,
        d: Resource<Descriptor>,
        _flags: types::PathFlags,
        _path: String,
        _atime: types::NewTimestamp,
        _mtime: types::NewTimestamp,
    ) -> FsResult<()> {
        self.descriptor(&d)?;
        Ok(Err(ErrorCode::Unsupported))
    }

    /// Volumes have no links (preview 1's `path_link` is ENOSYS too).
    fn link_at(
        &mut self,
        d: Resource<Descriptor>,
        _old_flags: types::PathFlags,
        _old_path: String,
        new: Resource<Descriptor>,
        _new_path: String,
    ) -> FsResult<()> {
        self.descriptor(&d)?;
        self.descriptor(&new)?;
        Ok(Err(ErrorCode::Unsupported))
    }

    fn open_at(
        &mut self,
        d: Resource<Descriptor>,
        _path_flags: types::PathFlags,
        path: String,
        open: types::OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let (vol, volume, path) = match self.at(&d, &path)? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let how = Open {
            create: open.contains(types::OpenFlags::CREATE),
            exclusive: open.contains(types::OpenFlags::EXCLUSIVE),
            truncate: open.contains(types::OpenFlags::TRUNCATE),
            directory: open.contains(types::OpenFlags::DIRECTORY),
            write: flags.contains(DescriptorFlags::WRITE),
        };
        let (kind, flags) = match volume.open(&path, how) {
            Ok(Kind::File) => (
                Kind::File,
                flags & (DescriptorFlags::READ | DescriptorFlags::WRITE),
            ),
            // Directory rights beyond the volume's are dropped, not refused:
            // wasi-libc asks for them all when it opens any directory.
            Ok(Kind::Dir) => (Kind::Dir, flags & dir_flags(volume)),
            Err(e) => return Ok(Err(code(e))),
        };
        self.push_descriptor(vol, path, kind, flags)
    }

    fn readlink_at(&mut self, d: Resource<Descriptor>, _path: String) -> FsResult<String> {
        self.descriptor(&d)?;
        Ok(Err(ErrorCode::Unsupported))
    }

    fn remove_directory_at(&mut self, d: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.modify_at(&d, &path, Volume::remove_dir)
    }

    /// Within one volume (mount); across volumes is `cross-device`.
    fn rename_at(
        &mut self,
        d: Resource<Descriptor>,
        old_path: String,
        new: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let (vol, volume, from) = match self.at(&d, &old_path)? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let (new_vol, _, to) = match self.at(&new, &new_path)? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        if vol != new_vol {
            return Ok(Err(ErrorCode::CrossDevice));
        }
        Ok(volume.rename(&from, &to).map_err(code))
    }

    fn symlink_at(
        &mut self,
        d: Resource<Descriptor>,
        _old_path: String,
        _new_path: String,
    ) -> FsResult<()> {
        self.descriptor(&d)?;
        Ok(Err(ErrorCode::Unsupported))
    }

    fn unlink_file_at(&mut self, d: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.modify_at(&d, &path, Volume::unlink)
    }

    fn is_same_object(
        &mut self,
        d: Resource<Descriptor>,
        other: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        let (a, b) = (self.descriptor(&d)?, self.descriptor(&other)?);
        Ok(a.vol == b.vol && a.path == b.path)
    }

    fn metadata_hash(&mut self, d: Resource<Descriptor>) -> FsResult<types::MetadataHashValue> {
        let desc = self.descriptor(&d)?;
        Ok(Ok(hash(desc.vol, &desc.path)))
    }

    fn metadata_hash_at(
        &mut self,
        d: Resource<Descriptor>,
        _flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        Ok(self.at(&d, &path)?.and_then(|(vol, volume, path)| {
            volume.stat(&path).map_err(code)?;
            Ok(hash(vol, &path))
        }))
    }

    fn drop(&mut self, d: Resource<Descriptor>) -> wasmtime::Result<()> {
        self.table.delete(d)?;
        self.release_paths();
        Ok(())
    }
}

impl Ctx {
    /// An output stream on a file opened for writing, at `offset` (`None`:
    /// appending).
    fn writer(
        &mut self,
        d: &Resource<Descriptor>,
        offset: Option<Filesize>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let writer = match self.file(d, DescriptorFlags::WRITE)? {
            Ok((desc, volume)) => FileWriter {
                volume: volume.clone(),
                path: desc.path.clone(),
                pos: offset,
                failed: false,
            },
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(self.table.push(Box::new(writer) as DynOutputStream)?))
    }

    /// Runs a directory change on `path` under directory `d`.
    fn modify_at(
        &mut self,
        d: &Resource<Descriptor>,
        path: &str,
        op: fn(&Volume, &[String]) -> Result<(), FsError>,
    ) -> FsResult<()> {
        Ok(self
            .at(d, path)?
            .and_then(|(_, volume, path)| op(volume, &path).map_err(code)))
    }
}

impl types::HostDirectoryEntryStream for Ctx {
    fn read_directory_entry(
        &mut self,
        s: Resource<DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        let stream = self.table.get_mut(&s)?;
        let next = stream.volume.with_dir(&stream.path, |entries| {
            let from = match &stream.after {
                Some(name) => Bound::Excluded(name.as_str()),
                None => Bound::Unbounded,
            };
            entries
                .range::<str, _>((from, Bound::Unbounded))
                .next()
                .map(|(name, node)| (name.clone(), node.kind()))
        });
        Ok(match next {
            Ok(Some((name, kind))) => {
                stream.after = Some(name.clone());
                Ok(Some(types::DirectoryEntry {
                    type_: descriptor_type(kind),
                    name,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(code(e)),
        })
    }

    fn drop(&mut self, s: Resource<DirectoryEntryStream>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

/// `read-via-stream`: the file's bytes from `pos` on, at most
/// [`MAX_GATHER`] per read; closed at the end of the file.
struct FileReader {
    volume: Volume,
    path: Path,
    pos: u64,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for FileReader {
    async fn ready(&mut self) {}
}

impl InputStream for FileReader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let max = size.min(MAX_GATHER);
        let bytes = self.volume.read_at(&self.path, self.pos, |data| {
            Bytes::copy_from_slice(&data[..data.len().min(max)])
        });
        if bytes.is_empty() && size > 0 {
            return Err(StreamError::Closed);
        }
        self.pos += bytes.len() as u64;
        Ok(bytes)
    }
}

/// `write-via-stream` (at `pos`) or `append-via-stream` (`pos` is `None`):
/// each write is all or nothing (see [`Volume::write_at`]); a failed one
/// closes the stream, its `error` carrying the [`FsError`] for
/// `filesystem-error-code`.
struct FileWriter {
    volume: Volume,
    path: Path,
    pos: Option<u64>,
    failed: bool,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for FileWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for FileWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.failed {
            return Err(StreamError::Closed);
        }
        if bytes.len() > MAX_GATHER {
            return Err(StreamError::trap("write exceeds the check-write permit"));
        }
        match self.volume.write_at(&self.path, self.pos, &bytes) {
            Ok(n) => {
                if let Some(pos) = &mut self.pos {
                    *pos += n as u64;
                }
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(StreamError::LastOperationFailed(wasmtime::Error::new(e)))
            }
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        if self.failed {
            return Err(StreamError::Closed);
        }
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if self.failed {
            return Err(StreamError::Closed);
        }
        Ok(MAX_GATHER)
    }
}
