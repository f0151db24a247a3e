//! File descriptors and paths: stdio, the in-memory volumes, and reads and
//! writes on sockets (which POSIX-style guests do with `fd_read`/`fd_write`).

use alloc::string::String;
use alloc::vec::Vec;
use core::task::Poll;

use wasmtime::Linker;

use super::abi::{self, Errno};
use super::{Ctx, Fd, Mem, Ret, blocking_fn, net, sync_fn};
use crate::fs::{Node, Tree, lookup, lookup_mut};
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
            modify_parent(cx, vol, &path, |entries, name, room| {
                if entries.contains_key(name) {
                    return Err(abi::EXIST);
                }
                let cost = entry_cost(name);
                if cost > room {
                    return Err(abi::NOSPC);
                }
                entries.insert(name.into(), Node::Dir(Default::default()));
                Ok(cost as isize)
            })
        }
    );
    sync_fn!(
        linker,
        "path_unlink_file",
        |m, cx, dirfd: i32, path: i32, len: i32| {
            let (vol, path) = resolve(cx, dirfd, m.path(path as u32, len as u32)?)?;
            modify_parent(cx, vol, &path, |entries, name, _| match entries.get(name) {
                None => Err(abi::NOENT),
                Some(Node::Dir(_)) => Err(abi::ISDIR),
                Some(Node::File(data)) => {
                    let freed = data.len() + entry_cost(name);
                    entries.remove(name);
                    Ok(-(freed as isize))
                }
            })
        }
    );
    sync_fn!(
        linker,
        "path_remove_directory",
        |m, cx, dirfd: i32, path: i32, len: i32| {
            let (vol, path) = resolve(cx, dirfd, m.path(path as u32, len as u32)?)?;
            modify_parent(cx, vol, &path, |entries, name, _| match entries.get(name) {
                None => Err(abi::NOENT),
                Some(Node::File(_)) => Err(abi::NOTDIR),
                Some(Node::Dir(children)) if !children.is_empty() => Err(abi::NOTEMPTY),
                Some(Node::Dir(_)) => {
                    entries.remove(name);
                    Ok(-(entry_cost(name) as isize))
                }
            })
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
        } => {
            let tree = cx.volumes[vol].tree.lock();
            match lookup(&tree.root, path) {
                Some(Node::File(data)) => {
                    let start = (pos as usize).min(data.len());
                    m.scatter(&iovs, &data[start..])
                }
                // Removed while open: reads see an empty file.
                _ => Ok(0),
            }
        }
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
        }) => write_file(cx, vol, path, if append { None } else { Some(pos) }, &data),
        Ok(Fd::Dir { .. }) => Err(abi::ISDIR),
        Ok(_) => Err(abi::BADF),
    };
    Poll::Ready(result.and_then(|count| m.set_u32(out, count as u32)))
}

/// Writes at `pos` (or the end) and moves the fd's position past the data.
fn write_file(
    cx: &Ctx,
    vol: usize,
    path: &[String],
    pos: Option<u64>,
    buf: &[u8],
) -> Result<usize, Errno> {
    let mut tree = cx.volumes[vol].tree.lock();
    let Tree {
        root,
        used,
        capacity,
    } = &mut *tree;
    let Some(Node::File(data)) = lookup_mut(root, path) else {
        return Err(abi::NOENT);
    };
    let start = pos.map_or(data.len(), |p| p as usize);
    let end = start.checked_add(buf.len()).ok_or(abi::OVERFLOW)?;
    let grow = end.saturating_sub(data.len());
    if used.saturating_add(grow) > *capacity {
        return Err(abi::NOSPC);
    }
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(buf);
    *used += grow;
    drop(tree);
    Ok(buf.len())
}

fn seek(cx: &mut Ctx, fd: i32, offset: i64, whence: i32) -> Result<u64, Errno> {
    let Fd::File { vol, path, pos, .. } = cx.fd(fd)? else {
        return Err(abi::SPIPE);
    };
    let len = match lookup(&cx.volumes[*vol].tree.lock().root, path) {
        Some(node) => node.size() as i64,
        None => 0,
    };
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
    let tree = cx.volumes[vol].tree.lock();
    let node = lookup(&tree.root, path).ok_or(abi::NOENT)?;
    let filetype = match node {
        Node::File(_) => abi::FILETYPE_REGULAR_FILE,
        Node::Dir(_) => abi::FILETYPE_DIRECTORY,
    };
    Ok((filetype, node.size(), inode(vol, path)))
}

/// A stable inode number: FNV-1a over the volume index and path.
fn inode(vol: usize, path: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ vol as u64;
    for part in path {
        for b in part.bytes().chain(core::iter::once(b'/')) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
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
    if path.starts_with('/') {
        return Err(abi::NOTCAPABLE);
    }
    let mut out = base.clone();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if out.len() > base.len() => {
                out.pop();
            }
            ".." => return Err(abi::NOTCAPABLE),
            name => out.push(name.into()),
        }
    }
    Ok((*vol, out))
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
    let wants_write = rights
        & (abi::RIGHT_FD_WRITE | abi::RIGHT_FD_ALLOCATE | abi::RIGHT_FD_FILESTAT_SET_SIZE)
        != 0
        || oflags & (abi::OFLAGS_CREAT | abi::OFLAGS_TRUNC) != 0
        || append;
    let volume = &cx.volumes[vol];
    if wants_write && volume.read_only {
        return Err(abi::ROFS);
    }
    let is_dir = {
        let mut tree = volume.tree.lock();
        let Tree {
            root,
            used,
            capacity,
        } = &mut *tree;
        match lookup_mut(root, &path) {
            Some(_) if oflags & abi::OFLAGS_EXCL != 0 && oflags & abi::OFLAGS_CREAT != 0 => {
                return Err(abi::EXIST);
            }
            Some(Node::Dir(_)) if wants_write => return Err(abi::ISDIR),
            Some(Node::Dir(_)) => true,
            Some(Node::File(_)) if oflags & abi::OFLAGS_DIRECTORY != 0 => return Err(abi::NOTDIR),
            Some(Node::File(data)) => {
                if oflags & abi::OFLAGS_TRUNC != 0 {
                    *used -= data.len();
                    data.clear();
                }
                false
            }
            None if oflags & abi::OFLAGS_CREAT != 0 && oflags & abi::OFLAGS_DIRECTORY == 0 => {
                let (name, parent) = path.split_last().ok_or(abi::EXIST)?;
                match lookup_mut(root, parent) {
                    Some(Node::Dir(entries)) => {
                        let cost = entry_cost(name);
                        if used.saturating_add(cost) > *capacity {
                            return Err(abi::NOSPC);
                        }
                        entries.insert(name.clone(), Node::File(Vec::new()));
                        *used += cost;
                    }
                    Some(Node::File(_)) => return Err(abi::NOTDIR),
                    None => return Err(abi::NOENT),
                }
                false
            }
            None => return Err(abi::NOENT),
        }
    };
    let fd = if is_dir {
        Fd::Dir {
            vol,
            path,
            preopen: false,
        }
    } else {
        Fd::File {
            vol,
            path,
            pos: 0,
            read: rights & abi::RIGHT_FD_READ != 0,
            write: wants_write,
            append,
        }
    };
    cx.insert(fd)
}

/// What a directory entry costs its volume besides file contents: the name
/// and the node's bookkeeping (a map entry), so a guest cannot fill the node
/// heap with empty files or directories.
pub(crate) fn entry_cost(name: &str) -> usize {
    name.len() + crate::fs::ENTRY_OVERHEAD
}

/// Runs `f` on the parent directory's entries, the last path component of a
/// writable volume and the room left in it; `f` returns how much it grew
/// (negative: freed) the volume's usage.
fn modify_parent(
    cx: &Ctx,
    vol: usize,
    path: &[String],
    f: impl FnOnce(&mut alloc::collections::BTreeMap<String, Node>, &str, usize) -> Result<isize, Errno>,
) -> Ret {
    let volume = &cx.volumes[vol];
    if volume.read_only {
        return Err(abi::ROFS);
    }
    let (name, parent) = path.split_last().ok_or(abi::PERM)?;
    let mut tree = volume.tree.lock();
    let Tree {
        root,
        used,
        capacity,
    } = &mut *tree;
    match lookup_mut(root, parent) {
        Some(Node::Dir(entries)) => {
            let delta = f(entries, name, capacity.saturating_sub(*used))?;
            *used = used
                .checked_add_signed(delta)
                .expect("volume usage stays in range");
            Ok(())
        }
        Some(Node::File(_)) => Err(abi::NOTDIR),
        None => Err(abi::NOENT),
    }
}

fn readdir(m: &mut Mem<'_>, cx: &Ctx, fd: i32, buf: u32, len: u32, cookie: u64, out: u32) -> Ret {
    let Fd::Dir { vol, path, .. } = cx.fd(fd)? else {
        return Err(abi::NOTDIR);
    };
    let mut entries: Vec<(String, u8, u64)> = Vec::new();
    {
        let tree = cx.volumes[*vol].tree.lock();
        let Some(Node::Dir(children)) = lookup(&tree.root, path) else {
            return Err(abi::NOENT);
        };
        entries.push((".".into(), abi::FILETYPE_DIRECTORY, inode(*vol, path)));
        entries.push(("..".into(), abi::FILETYPE_DIRECTORY, 0));
        for (name, node) in children {
            let filetype = match node {
                Node::File(_) => abi::FILETYPE_REGULAR_FILE,
                Node::Dir(_) => abi::FILETYPE_DIRECTORY,
            };
            let mut child = path.clone();
            child.push(name.clone());
            entries.push((name.clone(), filetype, inode(*vol, &child)));
        }
    }
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
