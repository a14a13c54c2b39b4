//! Chunked, resumable, shardable outputs.
//!
//! A run over `total` items (samples, paths, data points) is identified by a [`RunSpec`]. A shard
//! `k/n` computes the contiguous global index range [`Shard::range`]; the items are computed in
//! chunks, each written to `<out>.parts/` as soon as it is done and recorded in the progress
//! sidecar `<out>.progress.json`. `--resume` reloads the recorded chunks and computes only the
//! missing ranges. When the shard is complete the caller writes `<out>` and the metadata sidecar
//! `<out>.meta.json` (which `itoflow merge` reads), and the parts are removed.
//!
//! Every item is a pure function of its global index, so chunk and shard boundaries never change
//! the results.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use ndarray::{ArrayD, Axis};
use ndarray_npy::{ReadableElement, WritableElement, read_npy, write_npy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use itoflow_sde::brownian::STREAM_DEFINITION;

use crate::progress::Meter;

/// Shard `k` of `n` (1-based), written `k/n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which shard, `1..=n`.
    pub k: u64,
    /// Number of shards.
    pub n: u64,
}

impl Shard {
    /// The whole run.
    pub const ALL: Shard = Shard { k: 1, n: 1 };

    /// The global index range of this shard of `total` items: contiguous, and the shards
    /// `1/n … n/n` tile `0..total`.
    pub fn range(&self, total: u64) -> Range<u64> {
        let at = |k: u64| ((total as u128 * k as u128) / self.n as u128) as u64;
        at(self.k - 1)..at(self.k)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a shard: expected k/n with 1 ≤ k ≤ n, e.g. 2/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: u64 = k.trim().parse().map_err(|_| bad())?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// What a run computes. Two runs with equal specs produce identical items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The subcommand (`sample`, `likelihood`, `solve`).
    pub command: String,
    /// Every parameter that determines the items (not the shard, batch size or device).
    pub params: Value,
    /// Items in the whole, unsharded run.
    pub total: u64,
    /// Shape of one item.
    pub item_shape: Vec<usize>,
    /// Element type of the `.npy` parts (`f32`, `f64`).
    pub dtype: String,
    /// The random streams' definition ([`STREAM_DEFINITION`]): parts made by builds whose
    /// streams differ are not the same run (empty in files written before it was recorded).
    #[serde(default)]
    pub randomness: String,
}

impl RunSpec {
    /// The spec of `command` with these parameters, recording this build's random streams.
    pub fn new(
        command: &str,
        params: Value,
        total: u64,
        item_shape: Vec<usize>,
        dtype: &str,
    ) -> Self {
        Self {
            command: command.into(),
            params,
            total,
            item_shape,
            dtype: dtype.into(),
            randomness: STREAM_DEFINITION.into(),
        }
    }
}

/// One finished chunk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Global index of the first item.
    pub start: u64,
    /// Items in the chunk.
    pub count: usize,
    /// Counters of the computation (NFE, seconds, …).
    pub info: Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProgressFile {
    itoflow: String,
    spec: RunSpec,
    shard: Shard,
    done: Vec<ChunkRecord>,
}

/// The metadata sidecar `<out>.meta.json` of a finished output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// Version of itoflow that wrote it.
    pub itoflow: String,
    /// What was computed.
    pub spec: RunSpec,
    /// Which shard (`1/1` for a whole run or a merge).
    pub shard: Shard,
    /// Global index range `[start, end)` of the items in the file.
    pub range: [u64; 2],
    /// Command-specific summary (timings, NFE, statistics).
    pub summary: Value,
}

/// The result of a chunked run over one shard.
pub struct Outcome<T> {
    /// All items of the shard, in global index order, `[count, item_shape…]`.
    pub data: ArrayD<T>,
    /// The chunks, in index order (including those loaded on resume).
    pub chunks: Vec<ChunkRecord>,
    /// Items loaded from an earlier, interrupted run.
    pub resumed: u64,
}

/// Paths next to an output.
pub fn sidecar(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Element type name for the sidecars.
pub trait Dtype: ReadableElement + WritableElement + Clone + Copy {
    /// `f32` or `f64`.
    const NAME: &'static str;
    /// The nearest value of this type.
    fn from_f64(v: f64) -> Self;
}
impl Dtype for f32 {
    const NAME: &'static str = "f32";
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}
impl Dtype for f64 {
    const NAME: &'static str = "f64";
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// Fails unless `path` can be created or overwritten (checked before any long computation).
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("cannot write '{}': it is a directory", path.display());
    }
    let existed = path.exists();
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| anyhow!("cannot write '{}': {e}", path.display()))?;
    if !existed {
        let _ = fs::remove_file(path);
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that `path` is either
/// the old or the complete new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sidecar(path, ".tmp");
    fs::write(&tmp, bytes).map_err(|e| anyhow!("cannot write '{}': {e}", path.display()))?;
    fs::rename(&tmp, path).map_err(|e| anyhow!("cannot write '{}': {e}", path.display()))
}

/// Writes an array as `.npy` atomically.
pub fn write_npy_atomic<T: Dtype>(path: &Path, a: &ArrayD<T>) -> Result<()> {
    let tmp = sidecar(path, ".tmp");
    write_npy(&tmp, a).map_err(|e| anyhow!("cannot write '{}': {e}", path.display()))?;
    fs::rename(&tmp, path).map_err(|e| anyhow!("cannot write '{}': {e}", path.display()))
}

/// Reads an `.npy` file, with the file name in the error.
pub fn read_npy_file<T: Dtype>(path: &Path) -> Result<ArrayD<T>> {
    if !path.exists() {
        bail!("'{}' does not exist", path.display());
    }
    read_npy(path).map_err(|e| {
        anyhow!(
            "cannot read '{}' as a {} .npy array: {e}",
            path.display(),
            T::NAME
        )
    })
}

/// Writes the metadata sidecar of a finished output.
pub fn write_meta(out: &Path, meta: &Meta) -> Result<()> {
    let text = serde_json::to_string_pretty(meta)?;
    write_atomic(&sidecar(out, ".meta.json"), text.as_bytes())
}

/// Reads the metadata sidecar of an output.
pub fn read_meta(out: &Path) -> Result<Meta> {
    let path = sidecar(out, ".meta.json");
    let text = fs::read_to_string(&path).map_err(|e| {
        anyhow!(
            "cannot read the metadata of '{}' ({}): {e}",
            out.display(),
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow!("'{}' is not an itoflow metadata file: {e}", path.display()))
}

/// The chunked computation of one shard.
pub struct ChunkedRun<'a> {
    /// Where the final output goes (`None`: keep the chunks in memory; no resume).
    pub out: Option<&'a Path>,
    /// What is computed.
    pub spec: &'a RunSpec,
    /// Which shard.
    pub shard: Shard,
    /// Items per chunk.
    pub chunk: usize,
    /// Continue an interrupted run.
    pub resume: bool,
}

impl ChunkedRun<'_> {
    /// Runs `compute(start, count, meter)` for every chunk not already done, returning the
    /// whole shard in index order; `Ok(None)` when resuming a run that had already finished.
    pub fn run<T: Dtype>(
        &self,
        meter: &Meter,
        mut compute: impl FnMut(u64, usize, &Meter) -> Result<(ArrayD<T>, Value)>,
    ) -> Result<Option<Outcome<T>>> {
        if self.chunk == 0 {
            bail!("the batch size must be at least 1");
        }
        if self.spec.dtype != T::NAME {
            bail!("internal: dtype mismatch");
        }
        let range = self.shard.range(self.spec.total);
        let mut done: Vec<ChunkRecord> = Vec::new();
        let mut arrays: Vec<(u64, ArrayD<T>)> = Vec::new();
        let (parts, progress_path) = match self.out {
            Some(out) => (
                Some(sidecar(out, ".parts")),
                Some(sidecar(out, ".progress.json")),
            ),
            None => (None, None),
        };
        if self.resume {
            let (Some(out), Some(parts), Some(pp)) = (self.out, &parts, &progress_path) else {
                bail!("--resume needs an output file (--out)");
            };
            if !pp.exists() {
                if let Ok(meta) = read_meta(out)
                    && out.exists()
                    && meta.spec == *self.spec
                    && meta.shard == self.shard
                {
                    return Ok(None);
                }
                bail!(
                    "nothing to resume: '{}' does not exist (run once without --resume)",
                    pp.display()
                );
            }
            let text = fs::read_to_string(pp)
                .map_err(|e| anyhow!("cannot read '{}': {e}", pp.display()))?;
            let prog: ProgressFile = serde_json::from_str(&text)
                .map_err(|e| anyhow!("'{}' is damaged: {e}", pp.display()))?;
            if prog.spec != *self.spec || prog.shard != self.shard {
                bail!(
                    "cannot resume: '{}' was started with different parameters or shard; \
                     rerun without --resume to start over",
                    out.display()
                );
            }
            for rec in prog.done {
                let file = parts.join(chunk_name(rec.start));
                // A chunk whose file is missing or unreadable is simply computed again.
                if let Ok(a) = read_npy::<_, ArrayD<T>>(&file)
                    && a.shape()[0] == rec.count
                    && a.shape()[1..] == self.spec.item_shape[..]
                {
                    arrays.push((rec.start, a));
                    done.push(rec);
                }
            }
        } else if let (Some(parts), Some(pp)) = (&parts, &progress_path) {
            if parts.exists() {
                fs::remove_dir_all(parts)
                    .map_err(|e| anyhow!("cannot remove '{}': {e}", parts.display()))?;
            }
            let _ = fs::remove_file(pp);
        }
        if let Some(parts) = &parts {
            fs::create_dir_all(parts)
                .map_err(|e| anyhow!("cannot write '{}': {e}", parts.display()))?;
        }
        done.sort_by_key(|r| r.start);
        arrays.sort_by_key(|(s, _)| *s);
        let resumed: u64 = done.iter().map(|r| r.count as u64).sum();
        let todo = missing(&range, &done, self.chunk as u64);
        let mut finished = resumed;
        meter.set_done(finished as f64);
        for (start, count) in todo {
            let (a, info) = compute(start, count, meter)?;
            if a.shape()[0] != count || a.shape()[1..] != self.spec.item_shape[..] {
                bail!(
                    "internal: chunk has shape {:?}, expected [{count}, {:?}]",
                    a.shape(),
                    self.spec.item_shape
                );
            }
            let rec = ChunkRecord { start, count, info };
            if let (Some(parts), Some(pp)) = (&parts, &progress_path) {
                write_npy_atomic(&parts.join(chunk_name(start)), &a)?;
                let mut all = done.clone();
                all.push(rec.clone());
                all.sort_by_key(|r| r.start);
                let prog = ProgressFile {
                    itoflow: env!("CARGO_PKG_VERSION").into(),
                    spec: self.spec.clone(),
                    shard: self.shard,
                    done: all,
                };
                write_atomic(pp, serde_json::to_string(&prog)?.as_bytes())?;
            }
            done.push(rec);
            arrays.push((start, a));
            finished += count as u64;
            meter.set_done(finished as f64);
        }
        done.sort_by_key(|r| r.start);
        arrays.sort_by_key(|(s, _)| *s);
        let views: Vec<_> = arrays.iter().map(|(_, a)| a.view()).collect();
        let data = if views.is_empty() {
            let mut shape = vec![0];
            shape.extend(&self.spec.item_shape);
            ArrayD::from_shape_vec(shape, Vec::new())?
        } else {
            ndarray::concatenate(Axis(0), &views)?
        };
        Ok(Some(Outcome {
            data,
            chunks: done,
            resumed,
        }))
    }

    /// Removes the parts and the progress file once the output and its metadata are written.
    pub fn cleanup(&self) {
        if let Some(out) = self.out {
            let _ = fs::remove_dir_all(sidecar(out, ".parts"));
            let _ = fs::remove_file(sidecar(out, ".progress.json"));
        }
    }
}

fn chunk_name(start: u64) -> String {
    format!("chunk-{start:012}.npy")
}

/// The sub-ranges of `range` not covered by `done` (sorted), split into chunks.
fn missing(range: &Range<u64>, done: &[ChunkRecord], chunk: u64) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let mut push = |from: u64, to: u64| {
        let mut s = from;
        while s < to {
            let e = (s + chunk).min(to);
            out.push((s, (e - s) as usize));
            s = e;
        }
    };
    let mut cursor = range.start;
    for r in done {
        if r.start > cursor {
            push(cursor, r.start.min(range.end));
        }
        cursor = cursor.max(r.start + r.count as u64);
    }
    push(cursor, range.end);
    out
}

/// `itoflow merge OUT SHARD...`: joins `.npy` shard outputs after checking that they come from
/// the same run and cover it exactly once.
pub fn merge(out: &Path, shards: &[PathBuf]) -> Result<Meta> {
    if shards.is_empty() {
        bail!("merge needs at least one shard file");
    }
    let mut metas = Vec::new();
    for s in shards {
        if !s.exists() {
            bail!("'{}' does not exist", s.display());
        }
        let m = read_meta(s)?;
        metas.push((s.clone(), m));
    }
    let first = metas[0].1.clone();
    for (path, m) in &metas[1..] {
        if m.spec != first.spec {
            bail!(
                "'{}' comes from a different run than '{}' (parameters differ)",
                path.display(),
                metas[0].0.display()
            );
        }
    }
    metas.sort_by_key(|(_, m)| m.range[0]);
    let mut cursor = 0;
    for (path, m) in &metas {
        if m.range[0] > cursor {
            bail!(
                "incomplete: items {cursor}..{} are in none of the shards",
                m.range[0]
            );
        }
        if m.range[0] < cursor {
            bail!(
                "'{}' (items {}..{}) overlaps another shard",
                path.display(),
                m.range[0],
                m.range[1]
            );
        }
        cursor = m.range[1];
    }
    if cursor != first.spec.total {
        bail!(
            "incomplete: items {cursor}..{} are in none of the shards",
            first.spec.total
        );
    }
    check_writable(out)?;
    let likelihood = first.spec.command == "likelihood";
    let out_ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    match (out_ext, likelihood) {
        ("npy", _) | ("json", true) => {}
        ("json", false) => bail!(
            "'{}': only likelihood outputs can be merged into .json; use a .npy file name",
            out.display()
        ),
        _ => bail!("'{}': expected a .npy or .json file name", out.display()),
    }
    let mut summary = serde_json::json!({
        "merged_from": metas.iter().map(|(p, m)| serde_json::json!({
            "file": p.display().to_string(), "shard": m.shard.to_string(), "range": m.range,
            "summary": m.summary,
        })).collect::<Vec<_>>(),
    });
    match first.spec.dtype.as_str() {
        "f32" => write_npy_atomic(out, &join_parts::<f32>(&metas)?)?,
        "f64" => {
            let all = join_parts::<f64>(&metas)?;
            if likelihood {
                // The statistics of the whole run, as an unsharded run reports them.
                let stats = crate::likelihood::Statistics::of(&all);
                for (k, v) in stats.json().as_object().into_iter().flatten() {
                    summary[k] = v.clone();
                }
                let total = |key: &str| -> u64 {
                    metas
                        .iter()
                        .map(|(_, m)| m.summary[key].as_u64().unwrap_or(0))
                        .sum()
                };
                summary["nfe_total"] = total("nfe_total").into();
                summary["row_evals"] = total("row_evals").into();
            }
            if out_ext == "json" {
                crate::likelihood::write_json(out, 0, &all, &summary)?;
            } else {
                write_npy_atomic(out, &all)?;
            }
        }
        d => bail!("unsupported element type '{d}' in the metadata"),
    }
    let meta = Meta {
        itoflow: env!("CARGO_PKG_VERSION").into(),
        spec: first.spec.clone(),
        shard: Shard::ALL,
        range: [0, first.spec.total],
        summary,
    };
    write_meta(out, &meta)?;
    Ok(meta)
}

/// Reads every shard's items (`.npy`, or a likelihood `.json` output), checks them against
/// their metadata and joins them in index order.
fn join_parts<T: Dtype>(metas: &[(PathBuf, Meta)]) -> Result<ArrayD<T>> {
    let mut arrays = Vec::new();
    for (path, m) in metas {
        let a: ArrayD<T> = match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => read_npy_file(path)?,
            Some("json") if m.spec.command == "likelihood" => {
                let cols = m.spec.item_shape.first().copied().unwrap_or(2);
                let a = crate::likelihood::read_json(path, cols)?;
                // Only f64 runs write JSON; the conversion is the identity there.
                a.mapv(|v| T::from_f64(v))
            }
            _ => bail!(
                "'{}': only .npy outputs (and likelihood .json outputs) can be merged",
                path.display()
            ),
        };
        let n = (m.range[1] - m.range[0]) as usize;
        if a.shape().first() != Some(&n) || a.shape()[1..] != m.spec.item_shape[..] {
            bail!(
                "'{}' has shape {:?}, but its metadata says {n} items of shape {:?}",
                path.display(),
                a.shape(),
                m.spec.item_shape
            );
        }
        arrays.push(a);
    }
    let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
    ndarray::concatenate(Axis(0), &views).context("joining the shards")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_range() {
        for total in [0u64, 1, 7, 100, 101] {
            for n in 1..=7u64 {
                let mut cursor = 0;
                for k in 1..=n {
                    let r = Shard { k, n }.range(total);
                    assert_eq!(r.start, cursor);
                    cursor = r.end;
                }
                assert_eq!(cursor, total);
            }
        }
    }

    #[test]
    fn shard_parsing() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { k: 2, n: 4 });
        for bad in ["0/4", "5/4", "1", "a/b", "1/0", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_survive_the_progress_file() {
        // --resume compares the spec read back from JSON with the one built from the flags.
        let spec = RunSpec::new(
            "solve",
            serde_json::json!({"a": 0.1 + 0.2, "b": 1e-5 / 3.0, "c": std::f64::consts::PI}),
            10,
            vec![1, 2],
            "f64",
        );
        let back: RunSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn missing_ranges() {
        let rec = |start, count| ChunkRecord {
            start,
            count,
            info: Value::Null,
        };
        assert_eq!(missing(&(0..10), &[], 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(missing(&(0..10), &[rec(0, 4), rec(8, 2)], 4), vec![(4, 4)]);
        assert_eq!(missing(&(5..9), &[rec(5, 4)], 4), vec![]);
    }
}
