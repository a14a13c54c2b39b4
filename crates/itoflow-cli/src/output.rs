//! Output safety: an output is a regular file (or new), never one of the run's inputs, written
//! by one process at a time, and replaced atomically, with no temporary file left behind.
//!
//! * [`claim`]: refuses outputs that are not regular files (symbolic links, devices, FIFOs,
//!   directories) and outputs that are the same file as an input — compared by device and
//!   inode, so symbolic and hard links to an input are caught — and takes an exclusive lock
//!   on `<out>.lock` for the run. A second process finds the lock held and reports who holds it
//!   (process id, host, command, start time). Stale temporary files of a killed run are removed
//!   once the lock is held.
//! * [`write_atomic`]: writes `<path>.tmp`, syncs it and renames it over `<path>`; on any error
//!   the temporary file is removed.
//! * [`sha256_hex`], [`sha256_file`]: content hashes of chunks and finished outputs, recorded
//!   in the sidecars and checked by `--resume` and `merge`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use sha2::{Digest, Sha256};

/// `path` with `suffix` appended to its file name.
pub fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The identity of a file: device and inode (through symbolic links).
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<PathBuf> {
    fs::canonicalize(path).ok()
}

/// Whether `a` and `b` are the same existing file (through symbolic and hard links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (identity(a), identity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Fails unless `path` is absent or a regular file (not a symbolic link, device, FIFO,
/// socket or directory), and its directory lets a file be created there.
pub fn check_regular(path: &Path, flag: &str) -> Result<()> {
    let shown = path.display();
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            bail!(
                "{flag} '{shown}' is a symbolic link (to '{target}'); give the file itself, itoflow does not write through links"
            )
        }
        Ok(m) if m.is_dir() => bail!("cannot write '{shown}': it is a directory"),
        Ok(m) if !m.is_file() => bail!(
            "{flag} '{shown}' is not a regular file (a device, FIFO or socket); itoflow writes only regular files"
        ),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot write '{shown}': {e}"),
    }
    // The directory must take new files (the temporary file and the sidecars go there).
    let probe = sidecar(path, &format!(".probe{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!("cannot write '{shown}': {e}"),
    }
}

/// Fails if any of `outputs` is the same file as any of `inputs` (each a flag name and path).
pub fn check_not_input(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<()> {
    for (oflag, o) in outputs {
        for (iflag, i) in inputs {
            if same_file(o, i) {
                bail!(
                    "{oflag} '{}' is the same file as {iflag} '{}'; writing it would destroy the input, choose another output",
                    o.display(),
                    i.display()
                );
            }
        }
    }
    Ok(())
}

/// An exclusive claim on an output for the duration of a run (see [`claim`]); released, and
/// its lock file removed, on drop.
#[derive(Debug)]
pub struct Claim {
    lock_path: PathBuf,
    file: Option<File>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Remove the name first, then unlock: a process that opened the old file and locks it
        // afterwards sees that the name no longer leads to it and starts over.
        let _ = fs::remove_file(&self.lock_path);
        self.file.take();
    }
}

/// What a holder writes into the lock file.
fn holder_line() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into());
    let args: Vec<String> = std::env::args()
        .map(|a| a.replace(['\n', '\r'], " "))
        .collect();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "process {} on {host} since unix time {since}: {}",
        std::process::id(),
        args.join(" ")
    )
}

/// Takes the exclusive lock `<out>.lock` (non-blocking).
fn lock(out: &Path) -> Result<Claim> {
    let lock_path = sidecar(out, ".lock");
    check_regular(&lock_path, "the lock file")?;
    for _ in 0..100 {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| anyhow!("cannot create the lock file '{}': {e}", lock_path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.lines().next().unwrap_or("").trim();
                bail!(
                    "'{}' is being written by another run ({}); wait for it to finish or stop it",
                    out.display(),
                    if holder.is_empty() {
                        "its holder is starting"
                    } else {
                        holder
                    }
                );
            }
            Err(fs::TryLockError::Error(e)) => {
                bail!("cannot lock '{}': {e}", lock_path.display())
            }
        }
        // The holder before us may have removed the name after we opened it.
        if !same_open_file(&file, &lock_path) {
            continue;
        }
        file.set_len(0)
            .and_then(|_| file.write_all(holder_line().as_bytes()))
            .and_then(|_| file.write_all(b"\n"))
            .map_err(|e| anyhow!("cannot write the lock file '{}': {e}", lock_path.display()))?;
        return Ok(Claim {
            lock_path,
            file: Some(file),
        });
    }
    bail!(
        "cannot lock '{}': its lock file keeps being replaced",
        out.display()
    )
}

#[cfg(unix)]
fn same_open_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_open_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// Claims `out` for a run: `out` (and `extra` outputs such as a PNG grid) must be regular
/// files or new, none may be one of `inputs`, and no other process may be writing `out`.
/// Removes temporary files that a killed run left behind.
pub fn claim(out: &Path, extra: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<Claim> {
    check_regular(out, "--out")?;
    for (flag, p) in extra {
        check_regular(p, flag)?;
    }
    let mut outputs: Vec<(&str, PathBuf)> = vec![("--out", out.to_path_buf())];
    for suffix in [".meta.json", ".progress.json", ".lock"] {
        outputs.push(("--out", sidecar(out, suffix)));
    }
    outputs.extend(extra.iter().map(|(f, p)| (*f, p.to_path_buf())));
    let outs: Vec<(&str, &Path)> = outputs.iter().map(|(f, p)| (*f, p.as_path())).collect();
    check_not_input(&outs, inputs)?;
    for (flag, p) in extra {
        if same_file(out, p) || p == &out {
            bail!("{flag} '{}' is the same file as --out", p.display());
        }
    }
    let claim = lock(out)?;
    let mut written = vec![
        out.to_path_buf(),
        sidecar(out, ".meta.json"),
        sidecar(out, ".progress.json"),
    ];
    written.extend(extra.iter().map(|(_, p)| p.to_path_buf()));
    for p in written {
        let tmp = sidecar(&p, ".tmp");
        if fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_file()) {
            let _ = fs::remove_file(&tmp);
        }
    }
    Ok(claim)
}

/// Writes `path` atomically: `<path>.tmp` is written with `write`, synced and renamed over
/// `path`, so that `path` holds either its old or its complete new content. The temporary
/// file is removed on any error.
pub fn write_with(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let tmp = sidecar(path, ".tmp");
    let fail = |e: String| -> anyhow::Error {
        let _ = fs::remove_file(&tmp);
        anyhow!("cannot write '{}': {e}", path.display())
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| anyhow!("cannot write '{}': {e}", path.display()))?;
    let result = write(&mut f).and_then(|_| f.sync_all().map_err(Into::into));
    drop(f);
    if let Err(e) = result {
        return Err(fail(format!("{e:#}")));
    }
    fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

/// Writes `bytes` to `path` atomically (see [`write_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |f| f.write_all(bytes).map_err(Into::into))
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file's content, lower-case hex (streamed).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| anyhow!("cannot read '{}': {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| anyhow!("cannot read '{}': {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"abc"));
    }

    #[cfg(unix)]
    #[test]
    fn links_to_an_input_are_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("x.npy");
        fs::write(&input, b"data").unwrap();
        let soft = dir.path().join("soft.npy");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        let hard = dir.path().join("hard.npy");
        fs::hard_link(&input, &hard).unwrap();
        let other = dir.path().join("other.npy");
        fs::write(&other, b"data").unwrap();
        assert!(same_file(&input, &soft));
        assert!(same_file(&input, &hard));
        assert!(!same_file(&input, &other));
        assert!(!same_file(&input, &dir.path().join("missing")));
        let via_dir = dir.path().join(".").join("x.npy");
        let e = check_not_input(&[("--out", &via_dir)], &[("--data", &hard)]).unwrap_err();
        assert!(e.to_string().contains("same file as --data"), "{e}");
        // A symbolic link, a directory and a device are not regular outputs.
        assert!(
            check_regular(&soft, "--out")
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        assert!(
            check_regular(dir.path(), "--out")
                .unwrap_err()
                .to_string()
                .contains("directory")
        );
        assert!(
            check_regular(Path::new("/dev/null"), "--out")
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        assert!(check_regular(&other, "--out").is_ok());
        assert!(check_regular(&dir.path().join("new.npy"), "--out").is_ok());
        assert!(check_regular(&dir.path().join("no/such/dir.npy"), "--out").is_err());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            4,
            "no probe left behind"
        );
    }

    #[test]
    fn a_second_claim_names_the_holder_and_the_lock_goes_with_the_claim() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.npy");
        let stale = sidecar(&out, ".tmp");
        fs::write(&stale, b"half").unwrap();
        let first = claim(&out, &[], &[]).unwrap();
        assert!(!stale.exists(), "a killed run's temporary file is removed");
        let e = claim(&out, &[], &[]).unwrap_err().to_string();
        assert!(
            e.contains("is being written by another run (process"),
            "{e}"
        );
        assert!(
            e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        drop(first);
        assert!(!sidecar(&out, ".lock").exists());
        let again = claim(&out, &[], &[]).unwrap();
        drop(again);
    }

    #[test]
    fn failed_writes_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.npy");
        fs::write(&p, b"old").unwrap();
        let e = write_with(&p, |f| {
            f.write_all(b"partial")?;
            bail!("No space left on device")
        })
        .unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        assert!(!sidecar(&p, ".tmp").exists());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert!(!sidecar(&p, ".tmp").exists());
    }
}
