//! Bounds on the numbers a user gives, and memory estimates checked before allocating: a size
//! the machine cannot hold is a one-line error naming the size, not an allocation abort.

use anyhow::{Result, bail};

/// Most steps of a sampler or a fixed-step solver (the time grid alone is 8 bytes per step).
pub const MAX_STEPS: u64 = 1_000_000_000;

/// Most items (samples, paths) of one run: larger counts overflow the index arithmetic of the
/// random streams long before they fit in memory.
pub const MAX_ITEMS: u64 = 1 << 48;

/// Human-readable bytes (decimal units).
pub fn bytes(n: u128) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Bytes this process may still allocate: `ITOFLOW_MEMORY_LIMIT` (bytes) if set, else the
/// smaller of the system's available memory plus free swap (`/proc/meminfo`) and the cgroup's
/// limit (a Slurm or Kubernetes job's share). `None` when none of these can be read.
pub fn available_memory() -> Option<u128> {
    if let Some(v) = std::env::var("ITOFLOW_MEMORY_LIMIT")
        .ok()
        .and_then(|s| s.trim().parse::<u128>().ok())
    {
        return Some(v);
    }
    let mut best: Option<u128> = None;
    let mut take = |v: u128| best = Some(best.map_or(v, |b| b.min(v)));
    if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
        let field = |name: &str| -> Option<u128> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            let kb: u128 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kb * 1024)
        };
        if let Some(avail) = field("MemAvailable:") {
            take(avail + field("SwapFree:").unwrap_or(0));
        }
    }
    // cgroup v2: the job's limit less what it uses.
    let cg = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    if let (Some(max), Some(cur)) = (cg("memory.max"), cg("memory.current"))
        && let (Ok(max), Ok(cur)) = (max.trim().parse::<u128>(), cur.trim().parse::<u128>())
    {
        take(max.saturating_sub(cur));
    }
    best
}

/// Fails when `need` bytes (for `what`) exceed the memory available.
pub fn check_memory(need: u128, what: &str) -> Result<()> {
    if need > isize::MAX as u128 {
        bail!(
            "{what} needs {} of memory, more than any machine can address",
            bytes(need)
        );
    }
    if let Some(avail) = available_memory()
        && need > avail
    {
        bail!(
            "{what} needs {} of memory, more than the {} available",
            bytes(need),
            bytes(avail)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_named() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(256_000_000_000_000), "256.0 TB");
        let e = check_memory(1 << 100, "x").unwrap_err().to_string();
        assert!(e.starts_with("x needs "), "{e}");
        assert!(check_memory(1024, "x").is_ok());
    }
}
