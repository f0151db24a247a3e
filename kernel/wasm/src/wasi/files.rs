//! File descriptors and paths: stdio, the in-memory volumes, and reads and
//! writes on sockets (which POSIX-style guests do with `fd_read`/`fd_write`).

use alloc::string::String;
use alloc::vec::Vec;
use core::task::Poll;

use wasmtime::Linker;

use super::abi::{self, Errno};
use super::{Ctx, Fd, Mem, Ret, blocking_fn, net, sync_fn};
use crate::fs::{self, FsError, Kind, Open, inode};
use crate::host::Stream;

pub(super) fn add(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    blocking_fn!(
        linker,
        "fd_read",
        |m, cx, fd: i32, iovs: i32, n: i32, out: i32| {
            read(m, cx, fd, iovs as u32, n as u32, out as u32)
        }
    );
    blocking_fn!(
        linker,
        "fd_write",
        |m, cx, fd: i32, iovs: i32, n: i32, out: i32| {
            write(m, cx, fd, iovs as u32, n as u32, out as u32)
        }
    );
    sync_fn!(linker, "fd_close", |_m, cx, fd: i32| cx.remove(fd));
    sync_fn!(
        linker,
        "fd_seek",
        |m, cx, fd: i32, offset: i64, whence: i32, out: i32| {
            let pos = seek(cx, fd, offset, whence)?;
            m.set_u64(out as u32, pos)
        }
    );
    sync_fn!(linker, "fd_tell", |m, cx, fd: i32, out: i32| {
        let pos = seek(cx, fd, 0, i32::from(abi::WHENCE_CUR))?;
        m.set_u64(out as u32, pos)
    });
    sync_fn!(linker, "fd_fdstat_get", |m, cx, fd: i32, out: i32| {
        fdstat(m, cx, fd, out as u32)
    });
    sync_fn!(
        linker,
        "fd_fdstat_set_flags",
        |_m, cx, fd: i32, flags: i32| {
            let flags = flags as u16;
            match cx.fd_mut(fd)? {
                Fd::Listener { nonblock, .. } | Fd::Conn { nonblock, .. } => {
                    *nonblock = flags & abi::FDFLAGS_NONBLOCK != 0;
                    Ok(())
                }
                Fd::File { append, .. } => {
                    *append = flags & abi::FDFLAGS_APPEND != 0;
                    Ok(())
                }
                _ if flags == 0 => Ok(()),
                _ => Err(abi::NOTSUP),
            }
        }
    );
    sync_fn!(linker, "fd_filestat_get", |m, cx, fd: i32, out: i32| {
        let (filetype, size, ino) = match cx.fd(fd)? {
            Fd::Stdin | Fd::Log(_) => (abi::FILETYPE_CHARACTER_DEVICE, 0, 0),
            Fd::Listener { .. } | Fd::Conn { .. } => (abi::FILETYPE_SOCKET_STREAM, 0, 0),
            Fd::Dir { vol, path, .. } | Fd::File { vol, path, .. } => stat_path(cx, *vol, path)?,
        };
        filestat(m, out as u32, filetype, size, ino)
    });
    sync_fn!(linker, "fd_prestat_get", |m, cx, fd: i32, out: i32| {
        let name = preopen_name(cx, fd)?;
        let mut prestat = [0u8; 8];
        prestat[0] = abi::PREOPENTYPE_DIR;
        prestat[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
        m.write(out as u32, &prestat)
    });
    sync_fn!(
        linker,
        "fd_prestat_dir_name",
        |m, cx, fd: i32, buf: i32, len: i32| {
            let name = preopen_name(cx, fd)?;
            let len = (len as u32) as usize;
            if len < name.len() {
                return Err(abi::INVAL);
            }
            m.write(buf as u32, name.as_bytes())
        }
    );
    sync_fn!(
        linker,
        "fd_readdir",
        |m, cx, fd: i32, buf: i32, len: i32, cookie: i64, out: i32| {
            readdir(m, cx, fd, buf as u32, len as u32, cookie as u64, out as u32)
        }
    );
    sync_fn!(linker, "fd_sync", |_m, cx, fd: i32| cx.fd(fd).map(drop));
    sync_fn!(linker, "fd_datasync", |_m, cx, fd: i32| cx.fd(fd).map(drop));
    sync_fn!(
        linker,
        "path_open",
        |m,
         cx,
         dirfd: i32,
         _lookup: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         rights: i64,
         _inheriting: i64,
         fdflags: i32,
         out: i32| {
            let path = m.path(path as u32, path_len as u32)?;
            let fd = open(
                cx,
                dirfd,
                path,
                oflags as u16,
                rights as u64,
                fdflags as u16,
            )?;
            m.set_u32(out as u32, fd)
        }
    );
    sync_fn!(
        linker,
        "path_filestat_get",
        |m, cx, dirfd: i32, _flags: i32, path: i32, path_len: i32, out: i32| {
            let (vol, path) = resolve(cx, dirfd, m.path(path as u32, path_len as u32)?)?;
            let (filetype, size, ino) = stat_path(cx, vol, &path)?;
            filestat(m, out as u32, filetype, size, ino)
        }
    );
    sync_fn!(
        linker,
        "path_create_directory",
        |m, cx, dirfd: i32, path: i32, len: i32| {
            let (vol, path) = resolve(cx, dirfd, m.path(path as u32, len as u32)?)?;
            cx.volumes[vol].create_dir(&path).map_err(errno)
        }
    );
    sync_fn!(
        linker,
        "path_unlink_file",
        |m, cx, dirfd: i32, path: i32, len: i32| {
            let (vol, path) = resolve(cx, dirfd, m.path(path as u32, len as u32)?)?;
            cx.volumes[vol].unlink(&path).map_err(errno)
        }
    );
    sync_fn!(
        linker,
        "path_rename",
        |m, cx, dirfd: i32, old: i32, old_len: i32, new_dirfd: i32, new: i32, new_len: i32| {
            let (vol, from) = resolve(cx, dirfd, m.path(old as u32, old_len as u32)?)?;
            let (new_vol, to) = resolve(cx, new_dirfd, m.path(new as u32, new_len as u32)?)?;
            if vol != new_vol {
                return Err(abi::XDEV);
            }
            cx.volumes[vol].rename(&from, &to).map_err(errno)
        }
    );
    sync_fn!(
        linker,
        "fd_filestat_set_size",
        |_m, cx, fd: i32, size: i64| {
            match cx.fd(fd)? {
                Fd::File {
                    vol,
                    path,
                    write: true,
                    ..
                } => cx.volumes[*vol].set_size(path, size as u64).map_err(errno),
                Fd::Dir { .. } => Err(abi::ISDIR),
                _ => Err(abi::BADF),
            }
        }
    );
    sync_fn!(
        linker,
        "path_remove_directory",
        |m, cx, dirfd: i32, path: i32, len: i32| {
            let (vol, path) = resolve(cx, dirfd, m.path(path as u32, len as u32)?)?;
            cx.volumes[vol].remove_dir(&path).map_err(errno)
        }
    );
    Ok(())
}

fn read(m: &mut Mem<'_>, cx: &mut Ctx, fd: i32, iovs: u32, n: u32, out: u32) -> Poll<Ret> {
    let iovs = match m.iovecs(iovs, n) {
        Ok(iovs) => iovs,
        Err(e) => return Poll::Ready(Err(e)),
    };
    let result = match *match cx.fd(fd) {
        Ok(f) => f,
        Err(e) => return Poll::Ready(Err(e)),
    } {
        // Pods have no stdin: always at end of file.
        Fd::Stdin => Ok(0),
        Fd::Conn { id, nonblock } => match net::recv(m, cx, id, nonblock, &iovs) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        },
        Fd::File { read: false, .. } | Fd::Log(_) | Fd::Listener { .. } => Err(abi::BADF),
        Fd::Dir { .. } => Err(abi::ISDIR),
        Fd::File {
            vol, ref path, pos, ..
        } => cx.volumes[vol].read_at(path, pos, |data| m.scatter(&iovs, data)),
    };
    Poll::Ready(result.and_then(|count| {
        if let Ok(Fd::File { pos, .. }) = cx.fd_mut(fd) {
            *pos += count as u64;
        }
        m.set_u32(out, count as u32)
    }))
}

fn write(m: &mut Mem<'_>, cx: &mut Ctx, fd: i32, iovs: u32, n: u32, out: u32) -> Poll<Ret> {
    let data = match m.gather(iovs, n) {
        Ok(data) => data,
        Err(e) => return Poll::Ready(Err(e)),
    };
    let result = match cx.fd(fd) {
        Err(e) => Err(e),
        Ok(&Fd::Log(stream)) => {
            cx.host.log(stream, &data);
            Ok(data.len())
        }
        Ok(&Fd::Conn { id, nonblock }) => match net::send(cx, id, nonblock, &data) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        },
        Ok(&Fd::File {
            vol,
            write: true,
            pos,
            append,
            ref path,
            ..
        }) => cx.volumes[vol]
            .write_at(path, if append { None } else { Some(pos) }, &data)
            .map_err(errno),
        Ok(Fd::Dir { .. }) => Err(abi::ISDIR),
        Ok(_) => Err(abi::BADF),
    };
    Poll::Ready(result.and_then(|count| m.set_u32(out, count as u32)))
}

fn seek(cx: &mut Ctx, fd: i32, offset: i64, whence: i32) -> Result<u64, Errno> {
    let Fd::File { vol, path, pos, .. } = cx.fd(fd)? else {
        return Err(abi::SPIPE);
    };
    let len = cx.volumes[*vol]
        .stat(path)
        .map_or(0, |(_, size)| size as i64);
    let base = match u8::try_from(whence).map_err(|_| abi::INVAL)? {
        abi::WHENCE_SET => 0,
        abi::WHENCE_CUR => *pos as i64,
        abi::WHENCE_END => len,
        _ => return Err(abi::INVAL),
    };
    let new = base
        .checked_add(offset)
        .filter(|p| *p >= 0)
        .ok_or(abi::INVAL)? as u64;
    if let Ok(Fd::File { pos, .. }) = cx.fd_mut(fd) {
        *pos = new;
    }
    Ok(new)
}

fn fdstat(m: &mut Mem<'_>, cx: &Ctx, fd: i32, out: u32) -> Ret {
    let (filetype, flags) = match *cx.fd(fd)? {
        Fd::Stdin | Fd::Log(_) => (abi::FILETYPE_CHARACTER_DEVICE, 0),
        Fd::Dir { .. } => (abi::FILETYPE_DIRECTORY, 0),
        Fd::File { append, .. } => (
            abi::FILETYPE_REGULAR_FILE,
            if append { abi::FDFLAGS_APPEND } else { 0 },
        ),
        Fd::Listener { nonblock, .. } | Fd::Conn { nonblock, .. } => (
            abi::FILETYPE_SOCKET_STREAM,
            if nonblock { abi::FDFLAGS_NONBLOCK } else { 0 },
        ),
    };
    let mut stat = [0u8; abi::FDSTAT_SIZE];
    stat[0] = filetype;
    stat[2..4].copy_from_slice(&flags.to_le_bytes());
    stat[8..16].copy_from_slice(&abi::RIGHTS_ALL.to_le_bytes());
    stat[16..24].copy_from_slice(&abi::RIGHTS_ALL.to_le_bytes());
    m.write(out, &stat)
}

fn filestat(m: &mut Mem<'_>, out: u32, filetype: u8, size: u64, ino: u64) -> Ret {
    let mut stat = [0u8; abi::FILESTAT_SIZE];
    stat[8..16].copy_from_slice(&ino.to_le_bytes());
    stat[16] = filetype;
    stat[24..32].copy_from_slice(&1u64.to_le_bytes());
    stat[32..40].copy_from_slice(&size.to_le_bytes());
    m.write(out, &stat)
}

/// (filetype, size, inode number) of a volume path.
fn stat_path(cx: &Ctx, vol: usize, path: &[String]) -> Result<(u8, u64, u64), Errno> {
    let (kind, size) = cx.volumes[vol].stat(path).map_err(errno)?;
    Ok((filetype(kind), size, inode(vol, path)))
}

fn filetype(kind: Kind) -> u8 {
    match kind {
        Kind::File => abi::FILETYPE_REGULAR_FILE,
        Kind::Dir => abi::FILETYPE_DIRECTORY,
    }
}

/// The preview 1 code for a volume error.
fn errno(e: FsError) -> Errno {
    match e {
        FsError::NotFound => abi::NOENT,
        FsError::Exists => abi::EXIST,
        FsError::NotDir => abi::NOTDIR,
        FsError::IsDir => abi::ISDIR,
        FsError::NotEmpty => abi::NOTEMPTY,
        FsError::ReadOnly => abi::ROFS,
        FsError::NoSpace => abi::NOSPC,
        FsError::Escapes => abi::NOTCAPABLE,
        FsError::NotPermitted => abi::PERM,
        FsError::Invalid => abi::INVAL,
        FsError::Overflow => abi::OVERFLOW,
        FsError::NameTooLong => abi::NAMETOOLONG,
    }
}

fn preopen_name(cx: &Ctx, fd: i32) -> Result<&str, Errno> {
    match cx.fd(fd)? {
        Fd::Dir {
            vol, preopen: true, ..
        } => Ok(cx.volumes[*vol].mount_path()),
        _ => Err(abi::BADF),
    }
}

/// Resolves `path` against directory `dirfd`; it may not climb above it.
fn resolve(cx: &Ctx, dirfd: i32, path: &str) -> Result<(usize, Vec<String>), Errno> {
    let Fd::Dir {
        vol, path: base, ..
    } = cx.fd(dirfd)?
    else {
        return Err(abi::NOTDIR);
    };
    Ok((*vol, fs::resolve(base, path).map_err(errno)?))
}

fn open(
    cx: &mut Ctx,
    dirfd: i32,
    path: &str,
    oflags: u16,
    rights: u64,
    fdflags: u16,
) -> Result<u32, Errno> {
    let (vol, path) = resolve(cx, dirfd, path)?;
    let append = fdflags & abi::FDFLAGS_APPEND != 0;
    let how = Open {
        create: oflags & abi::OFLAGS_CREAT != 0,
        exclusive: oflags & abi::OFLAGS_EXCL != 0,
        truncate: oflags & abi::OFLAGS_TRUNC != 0,
        directory: oflags & abi::OFLAGS_DIRECTORY != 0,
        write: rights
            & (abi::RIGHT_FD_WRITE | abi::RIGHT_FD_ALLOCATE | abi::RIGHT_FD_FILESTAT_SET_SIZE)
            != 0
            || append,
    };
    let fd = match cx.volumes[vol].open(&path, how).map_err(errno)? {
        Kind::Dir => Fd::Dir {
            vol,
            path,
            preopen: false,
        },
        Kind::File => Fd::File {
            vol,
            path,
            pos: 0,
            read: rights & abi::RIGHT_FD_READ != 0,
            write: how.write || how.create || how.truncate,
            append,
        },
    };
    cx.insert(fd)
}

fn readdir(m: &mut Mem<'_>, cx: &Ctx, fd: i32, buf: u32, len: u32, cookie: u64, out: u32) -> Ret {
    let Fd::Dir { vol, path, .. } = cx.fd(fd)? else {
        return Err(abi::NOTDIR);
    };
    let mut entries: Vec<(String, u8, u64)> = Vec::new();
    entries.push((".".into(), abi::FILETYPE_DIRECTORY, inode(*vol, path)));
    entries.push(("..".into(), abi::FILETYPE_DIRECTORY, 0));
    cx.volumes[*vol]
        .with_dir(path, |children| {
            for (name, node) in children {
                let mut child = path.clone();
                child.push(name.clone());
                entries.push((name.clone(), filetype(node.kind()), inode(*vol, &child)));
            }
        })
        .map_err(errno)?;
    // Serialize from `cookie` on; the last entry may be cut off when the
    // buffer is full, which tells the guest to retry with a larger one.
    let mut bytes = Vec::new();
    for (i, (name, filetype, ino)) in entries.iter().enumerate().skip(cookie as usize) {
        if bytes.len() >= len as usize {
            break;
        }
        let mut dirent = [0u8; abi::DIRENT_SIZE];
        dirent[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        dirent[8..16].copy_from_slice(&ino.to_le_bytes());
        dirent[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        dirent[20] = *filetype;
        bytes.extend_from_slice(&dirent);
        bytes.extend_from_slice(name.as_bytes());
    }
    bytes.truncate(len as usize);
    m.write(buf, &bytes)?;
    m.set_u32(out, bytes.len() as u32)
}

/// The standard descriptors every container starts with.
pub(crate) fn stdio() -> [Fd; 3] {
    [Fd::Stdin, Fd::Log(Stream::Stdout), Fd::Log(Stream::Stderr)]
}
