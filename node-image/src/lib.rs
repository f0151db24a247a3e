//! Turning a node kernel and its command line into bootable artifacts.
//!
//! Hypervisors that load an ELF (`qemu -kernel`, Firecracker,
//! cloud-hypervisor) boot the kernel directly through its PVH note and need
//! nothing from here. Machines that boot from a disk or CD — bare metal, or
//! any BIOS/UEFI firmware path — need a bootloader: [`grub_iso`] makes a
//! hybrid ISO (BIOS and, where GRUB's EFI modules are installed, UEFI) whose
//! GRUB loads the kernel through its Multiboot2 header.
//!
//! Planned here: Firecracker/cloud-hypervisor configs and a node config disk
//! (cluster CA, bootstrap token).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages `grub_iso` needs (installed by `cargo xtask setup`).
pub const GRUB_PACKAGES: &[&str] = &["grub-pc-bin", "grub-efi-amd64-bin", "xorriso", "mtools"];

#[derive(Debug)]
pub enum Error {
    /// The kernel command line contains a character GRUB would interpret.
    BadCmdline(String),
    Io(PathBuf, std::io::Error),
    /// `grub-mkrescue` is missing or failed.
    Tool(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadCmdline(c) => write!(
                f,
                "command line has a character GRUB would interpret: {c:?}"
            ),
            Error::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Error::Tool(m) => write!(f, "grub-mkrescue: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// The GRUB configuration that boots `kernel_name` (inside `/boot`) with
/// `cmdline` through Multiboot2, at once and without a menu.
pub fn grub_cfg(kernel_name: &str, cmdline: &str) -> Result<String, Error> {
    // GRUB's script language would expand or split on these; node command
    // lines are plain `key=value` words, so refuse rather than quote.
    if cmdline
        .chars()
        .any(|c| matches!(c, '$' | '"' | '\'' | '\\' | ';' | '{' | '}' | '\n' | '#'))
    {
        return Err(Error::BadCmdline(cmdline.into()));
    }
    Ok(format!(
        "set timeout=0\nset default=0\n\
         serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n\
         menuentry \"skiff\" {{\n  multiboot2 /boot/{kernel_name} {cmdline}\n  boot\n}}\n"
    ))
}

/// Build a bootable hybrid ISO at `out` holding `kernel` and booting it with
/// `cmdline`.
pub fn grub_iso(kernel: &Path, cmdline: &str, out: &Path) -> Result<(), Error> {
    let cfg = grub_cfg("skiff-kernel", cmdline)?;
    let staging = out.with_extension("iso.d");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::Io(p, e)
    };
    let _ = std::fs::remove_dir_all(&staging);
    let grub_dir = staging.join("boot/grub");
    std::fs::create_dir_all(&grub_dir).map_err(io(&grub_dir))?;
    std::fs::copy(kernel, staging.join("boot/skiff-kernel")).map_err(io(kernel))?;
    std::fs::write(grub_dir.join("grub.cfg"), cfg).map_err(io(&grub_dir))?;
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(out)
        .arg(&staging)
        .output()
        .map_err(|e| {
            Error::Tool(format!(
                "cannot run it ({e}); install {}",
                GRUB_PACKAGES.join(" ")
            ))
        })?;
    let _ = std::fs::remove_dir_all(&staging);
    if !output.status.success() {
        return Err(Error::Tool(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_boots_kernel_with_cmdline_via_multiboot2() {
        let cfg = grub_cfg("k", "skiff.net=dhcp skiff.diag=7777").unwrap();
        assert!(cfg.contains("multiboot2 /boot/k skiff.net=dhcp skiff.diag=7777\n"));
        assert!(cfg.contains("set timeout=0"));
    }

    #[test]
    fn cfg_refuses_grub_metacharacters() {
        for bad in ["a=$x", "a=\"b\"", "a=b; reboot", "a=b\nboot"] {
            assert!(
                matches!(grub_cfg("k", bad), Err(Error::BadCmdline(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn iso_reports_missing_kernel_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            grub_iso(&dir.path().join("nope.elf"), "", &dir.path().join("x.iso")).unwrap_err();
        assert!(err.to_string().contains("nope.elf"), "{err}");
    }
}
