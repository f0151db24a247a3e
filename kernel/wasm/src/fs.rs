//! In-memory volumes: emptyDir (read-write, shareable between the containers
//! of a pod) and ConfigMap/Secret (read-only). No links, no permissions: a
//! volume is a tree of directories and byte files.
//!
//! The operations on a volume (path resolution, open, read, write, the
//! directory changes) live here once; the preview 1 and preview 2 layers
//! only map [`FsError`] to their own error codes.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use spin::Mutex;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    File(Vec<u8>),
    Dir(BTreeMap<String, Node>),
}

/// What a path names: volumes have no links or special files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

impl Node {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Node::File(_) => Kind::File,
            Node::Dir(_) => Kind::Dir,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        match self {
            Node::File(data) => data.len() as u64,
            Node::Dir(entries) => entries.len() as u64,
        }
    }
}

/// Bytes an emptyDir charges per directory entry on top of its name (a
/// `BTreeMap` slot, a `String` and a `Node`, rounded up).
pub const ENTRY_OVERHEAD: usize = 64;

#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) root: Node,
    /// Bytes held by files (contents, and for emptyDirs also entries: see
    /// [`ENTRY_OVERHEAD`]), and the most a writer may make it.
    pub(crate) used: usize,
    pub(crate) capacity: usize,
}

/// A directory mounted into a container at `mount_path`. Cloning shares the
/// contents (an emptyDir seen by two containers of a pod).
#[derive(Debug, Clone)]
pub struct Volume {
    pub(crate) mount_path: String,
    pub(crate) read_only: bool,
    pub(crate) tree: Arc<Mutex<Tree>>,
}

impl Volume {
    /// A read-only volume holding `files` (ConfigMap/Secret keys; a key may
    /// contain `/` to make subdirectories).
    pub fn read_only<'a>(
        mount_path: &str,
        files: impl IntoIterator<Item = (&'a str, Vec<u8>)>,
    ) -> Result<Self, crate::Error> {
        let volume = Self::build(mount_path, true, usize::MAX)?;
        {
            let mut tree = volume.tree.lock();
            for (path, data) in files {
                let parts = split(path).ok_or_else(|| {
                    crate::Error::Spec(alloc::format!("bad file name {path:?} in volume"))
                })?;
                let (name, dirs) = parts.split_last().expect("split() never returns empty");
                let mut dir = &mut tree.root;
                for part in dirs {
                    let Node::Dir(entries) = dir else {
                        return Err(crate::Error::Spec(alloc::format!(
                            "{path:?}: a parent is a file"
                        )));
                    };
                    dir = entries
                        .entry(part.clone())
                        .or_insert_with(|| Node::Dir(BTreeMap::new()));
                }
                let Node::Dir(entries) = dir else {
                    return Err(crate::Error::Spec(alloc::format!(
                        "{path:?}: a parent is a file"
                    )));
                };
                let len = data.len();
                if let Some(Node::File(old)) = entries.insert(name.clone(), Node::File(data)) {
                    tree.used -= old.len();
                }
                tree.used += len;
            }
        }
        Ok(volume)
    }

    /// An empty writable volume whose files may hold at most `capacity` bytes,
    /// counting each file and directory as its name plus [`ENTRY_OVERHEAD`].
    pub fn empty_dir(mount_path: &str, capacity: usize) -> Result<Self, crate::Error> {
        Self::build(mount_path, false, capacity)
    }

    fn build(mount_path: &str, read_only: bool, capacity: usize) -> Result<Self, crate::Error> {
        if !mount_path.starts_with('/') || (split(mount_path).is_none() && mount_path != "/") {
            return Err(crate::Error::Spec(alloc::format!(
                "mount path {mount_path:?} must be absolute and normalized"
            )));
        }
        Ok(Self {
            mount_path: mount_path.to_string(),
            read_only,
            tree: Arc::new(Mutex::new(Tree {
                root: Node::Dir(BTreeMap::new()),
                used: 0,
                capacity,
            })),
        })
    }

    /// The same contents mounted elsewhere (another container of the pod);
    /// `read_only` can restrict access, never widen it.
    pub fn mounted_at(&self, mount_path: &str, read_only: bool) -> Result<Self, crate::Error> {
        let mut volume = Self::build(mount_path, true, 0)?;
        volume.read_only = self.read_only || read_only;
        volume.tree = self.tree.clone();
        Ok(volume)
    }

    pub fn mount_path(&self) -> &str {
        &self.mount_path
    }

    /// The contents of the file at `path` (relative to the mount), if any.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let parts = split(path)?;
        match lookup(&self.tree.lock().root, &parts)? {
            Node::File(data) => Some(data.clone()),
            Node::Dir(_) => None,
        }
    }
}

/// Splits a relative path into its components; rejects empty paths, `.`,
/// `..` and empty components (used for names the node supplies).
fn split(path: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(ToString::to_string)
        .collect();
    let ok = parts.iter().all(|p| !p.is_empty() && p != "." && p != "..");
    ok.then_some(parts)
}

pub(crate) fn lookup<'a>(mut node: &'a Node, path: &[String]) -> Option<&'a Node> {
    for part in path {
        match node {
            Node::Dir(entries) => node = entries.get(part)?,
            Node::File(_) => return None,
        }
    }
    Some(node)
}

pub(crate) fn lookup_mut<'a>(mut node: &'a mut Node, path: &[String]) -> Option<&'a mut Node> {
    for part in path {
        match node {
            Node::Dir(entries) => node = entries.get_mut(part)?,
            Node::File(_) => return None,
        }
    }
    Some(node)
}

/// Why a volume operation failed; each WASI layer maps it to its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FsError {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    /// A write to a ConfigMap/Secret volume (or a read-only mount).
    ReadOnly,
    /// The emptyDir's byte cap would be exceeded.
    NoSpace,
    /// The path is absolute or climbs above the directory it is resolved
    /// against.
    Escapes,
    /// Removing or renaming the volume's root.
    NotPermitted,
    /// Moving a directory into itself.
    Invalid,
    /// An offset past what the node can address.
    Overflow,
    /// Longer than [`PATH_MAX`](crate::wasi::PATH_MAX).
    NameTooLong,
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl core::error::Error for FsError {}

/// How to open a path (both layers' open flags, decoded).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Open {
    pub create: bool,
    pub exclusive: bool,
    pub truncate: bool,
    pub directory: bool,
    /// The descriptor may modify the file (write, append, resize).
    pub write: bool,
}

/// Resolves the relative `path` against the directory `base`; `..` may not
/// climb above `base`, as a preopen is a capability.
pub(crate) fn resolve(base: &[String], path: &str) -> Result<Vec<String>, FsError> {
    if path.len() > crate::wasi::PATH_MAX as usize {
        return Err(FsError::NameTooLong);
    }
    if path.starts_with('/') {
        return Err(FsError::Escapes);
    }
    let mut out = base.to_vec();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if out.len() > base.len() => {
                out.pop();
            }
            ".." => return Err(FsError::Escapes),
            name => out.push(name.into()),
        }
    }
    Ok(out)
}

/// What a directory entry costs its volume besides file contents: the name
/// and the node's bookkeeping (a map entry), so a guest cannot fill the node
/// heap with empty files or directories.
pub(crate) fn entry_cost(name: &str) -> usize {
    name.len() + ENTRY_OVERHEAD
}

/// A stable inode number: FNV-1a over the volume index and path.
pub(crate) fn inode(vol: usize, path: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ vol as u64;
    for part in path {
        for b in part.bytes().chain(core::iter::once(b'/')) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Volume {
    fn writable(&self) -> Result<(), FsError> {
        if self.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// The kind and size (bytes, or entries for a directory) of `path`.
    pub(crate) fn stat(&self, path: &[String]) -> Result<(Kind, u64), FsError> {
        let tree = self.tree.lock();
        let node = lookup(&tree.root, path).ok_or(FsError::NotFound)?;
        Ok((node.kind(), node.size()))
    }

    /// Checks (and with `create`/`truncate` makes) what an open of `path`
    /// finds; the kind it opened.
    pub(crate) fn open(&self, path: &[String], how: Open) -> Result<Kind, FsError> {
        let wants_write = how.write || how.create || how.truncate;
        if wants_write {
            self.writable()?;
        }
        let mut tree = self.tree.lock();
        let Tree {
            root,
            used,
            capacity,
        } = &mut *tree;
        match lookup_mut(root, path) {
            Some(_) if how.exclusive && how.create => Err(FsError::Exists),
            Some(Node::Dir(_)) if wants_write => Err(FsError::IsDir),
            Some(Node::Dir(_)) => Ok(Kind::Dir),
            Some(Node::File(_)) if how.directory => Err(FsError::NotDir),
            Some(Node::File(data)) => {
                if how.truncate {
                    *used -= data.len();
                    data.clear();
                }
                Ok(Kind::File)
            }
            None if how.create && !how.directory => {
                let (name, parent) = path.split_last().ok_or(FsError::Exists)?;
                match lookup_mut(root, parent) {
                    Some(Node::Dir(entries)) => {
                        let cost = entry_cost(name);
                        if used.saturating_add(cost) > *capacity {
                            return Err(FsError::NoSpace);
                        }
                        entries.insert(name.clone(), Node::File(Vec::new()));
                        *used += cost;
                        Ok(Kind::File)
                    }
                    Some(Node::File(_)) => Err(FsError::NotDir),
                    None => Err(FsError::NotFound),
                }
            }
            None => Err(FsError::NotFound),
        }
    }

    /// Runs `f` on the contents of file `path` from `pos` on (empty past
    /// the end, or when the file is gone: it was removed while open).
    pub(crate) fn read_at<R>(&self, path: &[String], pos: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        let tree = self.tree.lock();
        match lookup(&tree.root, path) {
            Some(Node::File(data)) => {
                let start = usize::try_from(pos).unwrap_or(usize::MAX).min(data.len());
                f(&data[start..])
            }
            _ => f(&[]),
        }
    }

    /// Writes `buf` into file `path` at `pos` (`None`: at its end), all or
    /// nothing: past the byte cap it changes nothing.
    pub(crate) fn write_at(
        &self,
        path: &[String],
        pos: Option<u64>,
        buf: &[u8],
    ) -> Result<usize, FsError> {
        self.writable()?;
        let mut tree = self.tree.lock();
        let Tree {
            root,
            used,
            capacity,
        } = &mut *tree;
        let Some(Node::File(data)) = lookup_mut(root, path) else {
            return Err(FsError::NotFound);
        };
        let start = match pos {
            Some(p) => usize::try_from(p).map_err(|_| FsError::Overflow)?,
            None => data.len(),
        };
        let end = start.checked_add(buf.len()).ok_or(FsError::Overflow)?;
        let grow = end.saturating_sub(data.len());
        if used.saturating_add(grow) > *capacity {
            return Err(FsError::NoSpace);
        }
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
        *used += grow;
        Ok(buf.len())
    }

    /// Truncates or zero-extends file `path` to `size` bytes (growth counts
    /// against the byte cap).
    pub(crate) fn set_size(&self, path: &[String], size: u64) -> Result<(), FsError> {
        self.writable()?;
        let mut tree = self.tree.lock();
        let Tree {
            root,
            used,
            capacity,
        } = &mut *tree;
        match lookup_mut(root, path) {
            Some(Node::File(data)) => {
                let size = usize::try_from(size).map_err(|_| FsError::NoSpace)?;
                let grow = size.saturating_sub(data.len());
                if used.saturating_add(grow) > *capacity {
                    return Err(FsError::NoSpace);
                }
                *used = *used + grow - data.len().saturating_sub(size);
                data.resize(size, 0);
                Ok(())
            }
            Some(Node::Dir(_)) => Err(FsError::IsDir),
            None => Err(FsError::NotFound),
        }
    }

    pub(crate) fn create_dir(&self, path: &[String]) -> Result<(), FsError> {
        self.modify_parent(path, |entries, name, room| {
            if entries.contains_key(name) {
                return Err(FsError::Exists);
            }
            let cost = entry_cost(name);
            if cost > room {
                return Err(FsError::NoSpace);
            }
            entries.insert(name.into(), Node::Dir(BTreeMap::new()));
            Ok(cost as isize)
        })
    }

    pub(crate) fn unlink(&self, path: &[String]) -> Result<(), FsError> {
        self.modify_parent(path, |entries, name, _| match entries.get(name) {
            None => Err(FsError::NotFound),
            Some(Node::Dir(_)) => Err(FsError::IsDir),
            Some(Node::File(data)) => {
                let freed = data.len() + entry_cost(name);
                entries.remove(name);
                Ok(-(freed as isize))
            }
        })
    }

    pub(crate) fn remove_dir(&self, path: &[String]) -> Result<(), FsError> {
        self.modify_parent(path, |entries, name, _| match entries.get(name) {
            None => Err(FsError::NotFound),
            Some(Node::File(_)) => Err(FsError::NotDir),
            Some(Node::Dir(children)) if !children.is_empty() => Err(FsError::NotEmpty),
            Some(Node::Dir(_)) => {
                entries.remove(name);
                Ok(-(entry_cost(name) as isize))
            }
        })
    }

    /// Runs `f` on the parent directory's entries, the last path component
    /// and the room left in the (writable) volume; `f` returns how much it
    /// grew (negative: freed) the volume's usage.
    fn modify_parent(
        &self,
        path: &[String],
        f: impl FnOnce(&mut BTreeMap<String, Node>, &str, usize) -> Result<isize, FsError>,
    ) -> Result<(), FsError> {
        self.writable()?;
        let (name, parent) = path.split_last().ok_or(FsError::NotPermitted)?;
        let mut tree = self.tree.lock();
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
            Some(Node::File(_)) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    /// Moves `from` to `to` (POSIX `rename`: a file replaces a file, a
    /// directory an empty directory). The volume's usage changes by the
    /// difference in name length and whatever was replaced.
    pub(crate) fn rename(&self, from: &[String], to: &[String]) -> Result<(), FsError> {
        self.writable()?;
        let (from_name, from_parent) = from.split_last().ok_or(FsError::NotPermitted)?;
        let (to_name, to_parent) = to.split_last().ok_or(FsError::NotPermitted)?;
        let mut tree = self.tree.lock();
        let Tree {
            root,
            used,
            capacity,
        } = &mut *tree;
        let kind = lookup(root, from).ok_or(FsError::NotFound)?.kind();
        if from == to {
            return Ok(());
        }
        if kind == Kind::Dir && to.starts_with(from) {
            return Err(FsError::Invalid);
        }
        match lookup(root, to_parent) {
            Some(Node::Dir(_)) => {}
            Some(Node::File(_)) => return Err(FsError::NotDir),
            None => return Err(FsError::NotFound),
        }
        let replaced = match (kind, lookup(root, to)) {
            (_, None) => 0,
            (Kind::File, Some(Node::File(data))) => data.len() + entry_cost(to_name),
            (Kind::File, Some(Node::Dir(_))) => return Err(FsError::IsDir),
            (Kind::Dir, Some(Node::File(_))) => return Err(FsError::NotDir),
            (Kind::Dir, Some(Node::Dir(c))) if !c.is_empty() => return Err(FsError::NotEmpty),
            (Kind::Dir, Some(Node::Dir(_))) => entry_cost(to_name),
        };
        let after = (*used + entry_cost(to_name))
            .checked_sub(entry_cost(from_name) + replaced)
            .expect("volume usage covers what it holds");
        if after > *used && after > *capacity {
            return Err(FsError::NoSpace);
        }
        let Some(Node::Dir(entries)) = lookup_mut(root, from_parent) else {
            unreachable!("the source was found above");
        };
        let node = entries
            .remove(from_name)
            .expect("the source was found above");
        let Some(Node::Dir(entries)) = lookup_mut(root, to_parent) else {
            unreachable!("checked a directory above");
        };
        entries.insert(to_name.clone(), node);
        *used = after;
        Ok(())
    }

    /// Runs `f` on the entries of directory `path`.
    pub(crate) fn with_dir<R>(
        &self,
        path: &[String],
        f: impl FnOnce(&BTreeMap<String, Node>) -> R,
    ) -> Result<R, FsError> {
        let tree = self.tree.lock();
        match lookup(&tree.root, path) {
            Some(Node::Dir(entries)) => Ok(f(entries)),
            Some(Node::File(_)) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }
}
