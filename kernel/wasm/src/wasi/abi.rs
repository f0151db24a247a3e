//! WASI preview 1 (`wasi_snapshot_preview1`) constants and struct layouts,
//! from the witx definitions.

pub type Errno = u16;

pub const SUCCESS: Errno = 0;
pub const AGAIN: Errno = 6;
pub const BADF: Errno = 8;
pub const CONNRESET: Errno = 15;
pub const EXIST: Errno = 20;
pub const FAULT: Errno = 21;
pub const INVAL: Errno = 28;
pub const ISDIR: Errno = 31;
pub const MFILE: Errno = 33;
pub const NAMETOOLONG: Errno = 37;
pub const NOENT: Errno = 44;
pub const NOMEM: Errno = 48;
pub const NOSPC: Errno = 51;
pub const NOSYS: Errno = 52;
pub const NOTCONN: Errno = 53;
pub const NOTDIR: Errno = 54;
pub const NOTEMPTY: Errno = 55;
pub const NOTSOCK: Errno = 57;
pub const NOTSUP: Errno = 58;
pub const OVERFLOW: Errno = 61;
pub const PERM: Errno = 63;
pub const ROFS: Errno = 69;
pub const SPIPE: Errno = 70;
pub const XDEV: Errno = 75;
pub const NOTCAPABLE: Errno = 76;

// filetype
pub const FILETYPE_CHARACTER_DEVICE: u8 = 2;
pub const FILETYPE_DIRECTORY: u8 = 3;
pub const FILETYPE_REGULAR_FILE: u8 = 4;
pub const FILETYPE_SOCKET_STREAM: u8 = 6;

// fdflags
pub const FDFLAGS_APPEND: u16 = 1;
pub const FDFLAGS_NONBLOCK: u16 = 4;

// oflags
pub const OFLAGS_CREAT: u16 = 1;
pub const OFLAGS_DIRECTORY: u16 = 2;
pub const OFLAGS_EXCL: u16 = 4;
pub const OFLAGS_TRUNC: u16 = 8;

// rights that mean "this open may modify the file"
pub const RIGHT_FD_READ: u64 = 1 << 1;
pub const RIGHT_FD_WRITE: u64 = 1 << 6;
pub const RIGHT_FD_ALLOCATE: u64 = 1 << 8;
pub const RIGHT_FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
/// Every right defined by preview 1 (bits 0..=29); we enforce access by
/// volume mode and open mode instead of by rights.
pub const RIGHTS_ALL: u64 = (1 << 30) - 1;

// clockid
pub const CLOCK_REALTIME: u32 = 0;
pub const CLOCK_MONOTONIC: u32 = 1;

// whence
pub const WHENCE_SET: u8 = 0;
pub const WHENCE_CUR: u8 = 1;
pub const WHENCE_END: u8 = 2;

// eventtype and subscription flags
pub const EVENTTYPE_CLOCK: u8 = 0;
pub const EVENTTYPE_FD_READ: u8 = 1;
pub const EVENTTYPE_FD_WRITE: u8 = 2;
pub const SUBCLOCKFLAGS_ABSTIME: u16 = 1;

// sdflags
pub const SDFLAGS_RD: u8 = 1;
pub const SDFLAGS_WR: u8 = 2;

pub const PREOPENTYPE_DIR: u8 = 0;

// struct sizes
pub const IOVEC_SIZE: u32 = 8;
pub const FDSTAT_SIZE: usize = 24;
pub const FILESTAT_SIZE: usize = 64;
pub const DIRENT_SIZE: usize = 24;
pub const SUBSCRIPTION_SIZE: u32 = 48;
pub const EVENT_SIZE: u32 = 32;
