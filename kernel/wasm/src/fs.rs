//! In-memory volumes: emptyDir (read-write, shareable between the containers
//! of a pod) and ConfigMap/Secret (read-only). No links, no permissions: a
//! volume is a tree of directories and byte files.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::Mutex;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    File(Vec<u8>),
    Dir(BTreeMap<String, Node>),
}

impl Node {
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
