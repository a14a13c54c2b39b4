//! Chunked, resumable, shardable outputs.
//!
//! A run over `total` items (samples, paths, data points) is identified by a [`RunSpec`]. A shard
//! `k/n` computes the contiguous global index range [`Shard::range`]; the items are computed in
//! chunks, each written to `<out>.parts/` as soon as it is done and recorded, with the SHA-256
//! of its file, in the progress sidecar `<out>.progress.json`. `--resume` reloads the recorded
//! chunks whose content still has that hash and computes only the missing ranges (a damaged
//! chunk is computed again, and said so). A rerun without `--resume` refuses to discard finished
//! chunks unless `--overwrite` is given. When the shard is complete the caller writes `<out>` and
//! the metadata sidecar `<out>.meta.json` (which records the output's SHA-256 and which
//! `itoflow merge` checks), and the parts are removed.
//!
//! Every item is a pure function of its global index, so chunk and shard boundaries never change
//! the results.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use ndarray::{ArrayD, Axis};
use ndarray_npy::{ReadNpyExt, ReadableElement, WritableElement, WriteNpyExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use itoflow_sde::brownian::STREAM_DEFINITION;

use crate::limits;
use crate::npy;
pub use crate::output::sidecar;
use crate::output::{self, sha256_file, sha256_hex};
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

    /// Whether `1 ≤ k ≤ n` (a shard read from a file may not be).
    pub fn is_valid(&self) -> bool {
        self.k >= 1 && self.k <= self.n
    }

    /// The global index range of this shard of `total` items: contiguous, and the shards
    /// `1/n … n/n` tile `0..total` (empty for an invalid shard).
    pub fn range(&self, total: u64) -> Range<u64> {
        if !self.is_valid() {
            return 0..0;
        }
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

/// The `--shard` flag: `k/n`, or `auto` / `auto/N` — the shard of this task of a Slurm job
/// array or a Kubernetes Indexed Job (see [`ShardArg::resolve_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardArg {
    /// `k/n`.
    Fixed(Shard),
    /// `auto` (count from the environment) or `auto/N`.
    Auto(Option<u64>),
}

impl FromStr for ShardArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "auto" {
            return Ok(ShardArg::Auto(None));
        }
        if let Some(n) = t.strip_prefix("auto/") {
            return match n.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Ok(ShardArg::Auto(Some(n))),
                _ => Err(format!(
                    "'{s}' is not a shard: expected auto/N with N ≥ 1 shards, e.g. auto/4"
                )),
            };
        }
        s.parse::<Shard>().map(ShardArg::Fixed).map_err(|e| {
            format!("{e}, or auto (Slurm job array; Kubernetes Indexed Job with auto/N)")
        })
    }
}

impl ShardArg {
    /// The shard, and for `auto` which variables gave it. Slurm job arrays: task
    /// `SLURM_ARRAY_TASK_ID` of `SLURM_ARRAY_TASK_COUNT`, counted from `SLURM_ARRAY_TASK_MIN`
    /// in steps of `SLURM_ARRAY_TASK_STEP` (so `--array=1-4` and `--array=0-3` both give
    /// shards 1/4 … 4/4). Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` (from 0), with the
    /// count given as `auto/N` (the Job's `completions`). `env` reads a variable.
    pub fn resolve_with(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Shard, Option<String>)> {
        let n_given = match self {
            ShardArg::Fixed(s) => return Ok((s, None)),
            ShardArg::Auto(n) => n,
        };
        let num = |name: &str| -> Result<Option<u64>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                    anyhow!("--shard auto: {name}='{v}' is not a non-negative integer")
                }),
            }
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let count = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                anyhow!(
                    "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not"
                )
            })?;
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            if let Some(max) = num("SLURM_ARRAY_TASK_MAX")?
                && (max < min || (max - min) / step + 1 != count || (max - min) % step != 0)
            {
                bail!(
                    "--shard auto: the job array's task ids {min}-{max}:{step} are not {count} evenly spaced ids; submit a range such as --array=1-{count}"
                );
            }
            if id < min || (id - min) % step != 0 || (id - min) / step >= count {
                bail!(
                    "--shard auto: SLURM_ARRAY_TASK_ID={id} is not one of the {count} task ids from {min} in steps of {step}"
                );
            }
            let k = (id - min) / step + 1;
            if let Some(n) = n_given
                && n != count
            {
                bail!("--shard auto/{n}: the Slurm job array has {count} tasks");
            }
            let shard = Shard { k, n: count };
            return Ok((
                shard,
                Some(format!(
                    "shard {shard} from Slurm: SLURM_ARRAY_TASK_ID={id} of SLURM_ARRAY_TASK_COUNT={count} (ids from {min}, step {step})"
                )),
            ));
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let n = n_given.ok_or_else(|| {
                anyhow!(
                    "--shard auto: JOB_COMPLETION_INDEX={index} (Kubernetes Indexed Job) needs the number of shards: --shard auto/N with N the Job's completions"
                )
            })?;
            if index >= n {
                bail!("--shard auto/{n}: JOB_COMPLETION_INDEX={index} is not below {n}");
            }
            let shard = Shard { k: index + 1, n };
            return Ok((
                shard,
                Some(format!(
                    "shard {shard} from Kubernetes: JOB_COMPLETION_INDEX={index} of {n}"
                )),
            ));
        }
        bail!(
            "--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give the shard as k/n"
        )
    }
}

/// The shard of a run: `arg` resolved against the process environment (`None`: the whole
/// run). For `auto`, one note on stderr says which variables gave it.
pub fn resolve_shard(arg: Option<ShardArg>) -> Result<Shard> {
    let Some(arg) = arg else {
        return Ok(Shard::ALL);
    };
    let (shard, source) = arg.resolve_with(|k| std::env::var(k).ok())?;
    if let Some(source) = source {
        eprintln!("note: --shard auto: {source}");
    }
    Ok(shard)
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
    /// SHA-256 of the chunk's `.npy` file, checked on `--resume` (empty in progress files
    /// written before it was recorded: such chunks are computed again).
    #[serde(default)]
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProgressFile {
    itoflow: String,
    spec: RunSpec,
    shard: Shard,
    done: Vec<ChunkRecord>,
}

/// The metadata sidecar `<out>.meta.json` of a finished output. The file also records the
/// SHA-256 of the output (`sha256`, see [`write_meta`] and [`read_sidecar`]), which binds it to
/// the data it describes.
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

/// Writes `bytes` to `path` atomically (temporary file and rename; the temporary file is
/// removed on failure).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    output::write_atomic(path, bytes)
}

/// An array as `.npy` bytes.
fn npy_bytes<T: Dtype>(a: &ArrayD<T>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    a.write_npy(&mut buf)
        .map_err(|e| anyhow!("cannot encode the array as .npy: {e}"))?;
    Ok(buf)
}

/// Writes an array as `.npy` atomically.
pub fn write_npy_atomic<T: Dtype>(path: &Path, a: &ArrayD<T>) -> Result<()> {
    output::write_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        a.write_npy(&mut w).map_err(|e| anyhow!("{e}"))?;
        std::io::Write::flush(&mut w).map_err(Into::into)
    })
}

/// Parses `.npy` bytes (checked by [`npy::check_bytes`]) as an array of `T`.
pub fn parse_npy<T: Dtype>(bytes: &[u8], name: &str) -> Result<ArrayD<T>> {
    npy::check_bytes(bytes, name)?;
    ArrayD::<T>::read_npy(bytes).map_err(|e| {
        anyhow!(
            "cannot read '{name}' as a {} .npy array: {}",
            T::NAME,
            npy::one_line(e)
        )
    })
}

/// Writes the metadata sidecar of a finished output, recording the output's SHA-256.
pub fn write_meta(out: &Path, meta: &Meta) -> Result<()> {
    let mut v = serde_json::to_value(meta)?;
    v["sha256"] = sha256_file(out)?.into();
    let text = serde_json::to_string_pretty(&v)?;
    write_atomic(&sidecar(out, ".meta.json"), text.as_bytes())
}

/// Reads the metadata sidecar of an output and the output's SHA-256 that it records (`None`
/// for sidecars written before hashes were recorded).
pub fn read_sidecar(out: &Path) -> Result<(Meta, Option<String>)> {
    let path = sidecar(out, ".meta.json");
    let bytes = fs::read(&path).map_err(|e| {
        anyhow!(
            "cannot read the metadata of '{}' ({}): {e}",
            out.display(),
            path.display()
        )
    })?;
    let bad =
        |e: serde_json::Error| anyhow!("'{}' is not an itoflow metadata file: {e}", path.display());
    let v: Value = serde_json::from_slice(&bytes).map_err(bad)?;
    let hash = v.get("sha256").and_then(Value::as_str).map(str::to_string);
    let meta: Meta = serde_json::from_value(v).map_err(bad)?;
    Ok((meta, hash))
}

/// Fails unless `out`'s content has the SHA-256 its sidecar records.
fn check_hash(out: &Path, recorded: Option<&str>, actual: &str) -> Result<()> {
    match recorded {
        Some(h) if h == actual => Ok(()),
        Some(_) => bail!(
            "'{}' does not match its metadata ({}): its content changed after it was written (content hash differs); recompute it",
            out.display(),
            sidecar(out, ".meta.json").display()
        ),
        None => bail!(
            "'{}': its metadata record no content hash (written by an older itoflow); recompute it",
            out.display()
        ),
    }
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
    /// Discard the finished chunks of an interrupted run and start over.
    pub overwrite: bool,
}

/// What a progress file records as finished, checked against the shard's range: records
/// outside it, overlapping an earlier one or empty are dropped.
fn valid_records(done: Vec<ChunkRecord>, range: &Range<u64>) -> Vec<ChunkRecord> {
    let mut done = done;
    done.sort_by_key(|r| r.start);
    let mut out: Vec<ChunkRecord> = Vec::new();
    let mut cursor = range.start;
    for r in done {
        let end = r.start.checked_add(r.count as u64);
        if r.count == 0 || r.start < cursor || end.is_none_or(|e| e > range.end) {
            continue;
        }
        cursor = r.start + r.count as u64;
        out.push(r);
    }
    out
}

impl ChunkedRun<'_> {
    /// Bytes of memory the shard's items take, twice over (the chunks and the joined array).
    fn check_memory<T: Dtype>(&self, range: &Range<u64>) -> Result<()> {
        let item: u128 = self
            .spec
            .item_shape
            .iter()
            .fold(std::mem::size_of::<T>() as u128, |a, &d| {
                a.saturating_mul(d as u128)
            });
        let items = (range.end - range.start) as u128;
        limits::check_memory(
            items.saturating_mul(item).saturating_mul(2),
            &format!(
                "the output ({items} items of shape {:?}, {})",
                self.spec.item_shape,
                T::NAME
            ),
        )
    }

    /// Loads a recorded chunk if its file still has the recorded content.
    fn load_chunk<T: Dtype>(&self, file: &Path, rec: &ChunkRecord) -> Result<ArrayD<T>, String> {
        let (_, bytes) = npy::read_file(file, 0).map_err(|e| format!("{e:#}"))?;
        if rec.sha256.is_empty() {
            return Err("no content hash was recorded for it".into());
        }
        if sha256_hex(&bytes) != rec.sha256 {
            return Err("its content hash differs from the recorded one".into());
        }
        let a =
            parse_npy::<T>(&bytes, &file.display().to_string()).map_err(|e| format!("{e:#}"))?;
        if a.shape().first() != Some(&rec.count) || a.shape()[1..] != self.spec.item_shape[..] {
            return Err(format!("it has shape {:?}", a.shape()));
        }
        Ok(a)
    }

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
        if self.resume && self.overwrite {
            bail!("--resume and --overwrite exclude each other");
        }
        let range = self.shard.range(self.spec.total);
        self.check_memory::<T>(&range)?;
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
                if let Ok((meta, hash)) = read_sidecar(out)
                    && out.exists()
                    && meta.spec == *self.spec
                    && meta.shard == self.shard
                {
                    check_hash(out, hash.as_deref(), &sha256_file(out)?)?;
                    return Ok(None);
                }
                bail!(
                    "nothing to resume: '{}' does not exist (run once without --resume)",
                    pp.display()
                );
            }
            let text = fs::read_to_string(pp)
                .map_err(|e| anyhow!("cannot read '{}': {e}", pp.display()))?;
            let prog: ProgressFile = serde_json::from_str(&text).map_err(|e| {
                anyhow!(
                    "'{}' is damaged: {e}; rerun with --overwrite to start over",
                    pp.display()
                )
            })?;
            if prog.spec != *self.spec || prog.shard != self.shard {
                bail!(
                    "cannot resume: '{}' was started with different parameters or shard; \
                     rerun with --overwrite to start over",
                    out.display()
                );
            }
            for rec in valid_records(prog.done, &range) {
                let file = parts.join(chunk_name(rec.start));
                match self.load_chunk::<T>(&file, &rec) {
                    Ok(a) => {
                        arrays.push((rec.start, a));
                        done.push(rec);
                    }
                    Err(why) => eprintln!(
                        "note: the finished chunk of items {}..{} ({}) is not usable: {why}; computing it again",
                        rec.start,
                        rec.start + rec.count as u64,
                        file.display()
                    ),
                }
            }
        } else if let (Some(out), Some(parts), Some(pp)) = (self.out, &parts, &progress_path) {
            if pp.exists() && !self.overwrite {
                let finished = fs::read_to_string(pp)
                    .ok()
                    .and_then(|t| serde_json::from_str::<ProgressFile>(&t).ok())
                    .map(|p| p.done.iter().map(|r| r.count as u64).sum::<u64>());
                bail!(
                    "'{}' has {} finished by an interrupted run; add --resume to continue it or --overwrite to discard it",
                    out.display(),
                    finished.map_or("items".to_string(), |n| format!("{n} items"))
                );
            }
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
            if a.shape().first() != Some(&count) || a.shape()[1..] != self.spec.item_shape[..] {
                bail!(
                    "internal: chunk has shape {:?}, expected [{count}, {:?}]",
                    a.shape(),
                    self.spec.item_shape
                );
            }
            let mut rec = ChunkRecord {
                start,
                count,
                info,
                sha256: String::new(),
            };
            if let (Some(parts), Some(pp)) = (&parts, &progress_path) {
                let bytes = npy_bytes(&a)?;
                rec.sha256 = sha256_hex(&bytes);
                write_atomic(&parts.join(chunk_name(start)), &bytes)?;
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
/// the same run, that each holds the content its sidecar records (SHA-256) and the range its
/// shard covers, and that together they cover the run exactly once.
pub fn merge(out: &Path, shards: &[PathBuf]) -> Result<Meta> {
    if shards.is_empty() {
        bail!("merge needs at least one shard file: itoflow merge OUT SHARD...");
    }
    let out_ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if out_ext != "npy" && out_ext != "json" {
        bail!("'{}': expected a .npy or .json file name", out.display());
    }
    let mut metas = Vec::new();
    for s in shards {
        if !s.exists() {
            bail!("'{}' does not exist", s.display());
        }
        let (m, hash) = read_sidecar(s)?;
        metas.push((s.clone(), m, hash));
    }
    let first = metas[0].1.clone();
    for (path, m, _) in &metas[1..] {
        if m.spec != first.spec {
            bail!(
                "'{}' comes from a different run than '{}' (parameters differ)",
                path.display(),
                metas[0].0.display()
            );
        }
    }
    for (path, m, _) in &metas {
        let expected = m.shard.range(m.spec.total);
        if !m.shard.is_valid() || m.range != [expected.start, expected.end] {
            bail!(
                "'{}': its metadata record items {}..{} as shard {}, which covers items {}..{} of {}; the sidecar was edited or belongs to another file",
                path.display(),
                m.range[0],
                m.range[1],
                m.shard,
                expected.start,
                expected.end,
                m.spec.total
            );
        }
    }
    metas.sort_by_key(|(_, m, _)| m.range[0]);
    let mut cursor = 0;
    for (path, m, _) in &metas {
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
    let likelihood = first.spec.command == "likelihood";
    if out_ext == "json" && !likelihood {
        bail!(
            "'{}': only likelihood outputs can be merged into .json; use a .npy file name",
            out.display()
        );
    }
    let sidecars: Vec<PathBuf> = shards.iter().map(|s| sidecar(s, ".meta.json")).collect();
    let inputs: Vec<(&str, &Path)> = shards
        .iter()
        .chain(&sidecars)
        .map(|p| ("the shard", p.as_path()))
        .collect();
    let _claim = output::claim(out, &[], &inputs)?;
    let item: u128 = first.spec.item_shape.iter().map(|&d| d as u128).product();
    limits::check_memory(
        (first.spec.total as u128)
            .saturating_mul(item)
            .saturating_mul(16),
        &format!(
            "merging {} items of shape {:?}",
            first.spec.total, first.spec.item_shape
        ),
    )?;
    let mut summary = serde_json::json!({
        "merged_from": metas.iter().map(|(p, m, _)| serde_json::json!({
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
                        .map(|(_, m, _)| m.summary[key].as_u64().unwrap_or(0))
                        .fold(0u64, u64::saturating_add)
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

/// Reads every shard's items (`.npy`, or a likelihood `.json` output), checks their content
/// hash and shape against their metadata and joins them in index order.
fn join_parts<T: Dtype>(metas: &[(PathBuf, Meta, Option<String>)]) -> Result<ArrayD<T>> {
    let mut arrays = Vec::new();
    for (path, m, hash) in metas {
        let name = path.display().to_string();
        let ext = path.extension().and_then(|e| e.to_str());
        let bytes = match ext {
            Some("npy") => npy::read_file(path, 0)?.1,
            Some("json") if m.spec.command == "likelihood" => {
                fs::read(path).with_context(|| format!("cannot read '{name}'"))?
            }
            _ => bail!("'{name}': only .npy outputs (and likelihood .json outputs) can be merged"),
        };
        check_hash(path, hash.as_deref(), &sha256_hex(&bytes))?;
        let a: ArrayD<T> = if ext == Some("npy") {
            parse_npy(&bytes, &name)?
        } else {
            let cols = m.spec.item_shape.first().copied().unwrap_or(2);
            let a = crate::likelihood::parse_json(&bytes, &name, cols)?;
            // Only f64 runs write JSON; the conversion is the identity there.
            a.mapv(|v| T::from_f64(v))
        };
        let n = (m.range[1] - m.range[0]) as usize;
        if a.shape().first() != Some(&n) || a.shape()[1..] != m.spec.item_shape[..] {
            bail!(
                "'{name}' has shape {:?}, but its metadata says {n} items of shape {:?}",
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
    fn auto_shards_from_slurm_and_kubernetes() {
        fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        }
        let auto = ShardArg::Auto;
        // Slurm numbers tasks as submitted: --array=1-4 starts at 1, --array=0-3 at 0.
        for (id, min, max, k) in [("1", "1", "4", 1), ("4", "1", "4", 4), ("0", "0", "3", 1)] {
            let vars = [
                ("SLURM_ARRAY_TASK_ID", id),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_MIN", min),
                ("SLURM_ARRAY_TASK_MAX", max),
            ];
            let (s, why) = auto(None).resolve_with(env(&vars)).unwrap();
            assert_eq!(s, Shard { k, n: 4 });
            assert!(why.unwrap().contains(&format!("SLURM_ARRAY_TASK_ID={id}")));
        }
        // --array=10-16:2 → ids 10, 12, 14, 16.
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "14"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_MAX", "16"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert_eq!(
            auto(Some(4)).resolve_with(env(&stepped)).unwrap().0,
            Shard { k: 3, n: 4 }
        );
        assert!(auto(Some(3)).resolve_with(env(&stepped)).is_err());
        // A list of ids that is not a range is refused.
        let listed = [
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
        ];
        assert!(auto(None).resolve_with(env(&listed)).is_err());
        // Kubernetes: 0-based index, the count given.
        let k8s = [("JOB_COMPLETION_INDEX", "2")];
        let (s, why) = auto(Some(4)).resolve_with(env(&k8s)).unwrap();
        assert_eq!(s, Shard { k: 3, n: 4 });
        assert!(why.unwrap().contains("Kubernetes"));
        assert!(auto(None).resolve_with(env(&k8s)).is_err());
        assert!(auto(Some(2)).resolve_with(env(&k8s)).is_err());
        assert!(auto(None).resolve_with(env(&[])).is_err());
        let bad = [("JOB_COMPLETION_INDEX", "x")];
        assert!(auto(Some(2)).resolve_with(env(&bad)).is_err());
        // Parsing.
        assert_eq!("auto".parse::<ShardArg>().unwrap(), ShardArg::Auto(None));
        assert_eq!(
            "auto/4".parse::<ShardArg>().unwrap(),
            ShardArg::Auto(Some(4))
        );
        assert_eq!(
            "2/4".parse::<ShardArg>().unwrap(),
            ShardArg::Fixed(Shard { k: 2, n: 4 })
        );
        for bad in ["auto/0", "auto/x", "autox", "5/4"] {
            assert!(bad.parse::<ShardArg>().is_err(), "{bad}");
        }
        assert_eq!(Shard { k: 0, n: 0 }.range(10), 0..0);
    }

    #[test]
    fn progress_records_outside_the_shard_are_dropped() {
        let rec = |start, count| ChunkRecord {
            start,
            count,
            info: Value::Null,
            sha256: String::new(),
        };
        let kept = valid_records(
            vec![
                rec(4, 2),
                rec(0, 2),
                rec(1, 2),
                rec(8, 5),
                rec(2, 0),
                rec(u64::MAX, 9),
                rec(2, 2),
            ],
            &(0..10),
        );
        let got: Vec<(u64, usize)> = kept.iter().map(|r| (r.start, r.count)).collect();
        assert_eq!(got, vec![(0, 2), (2, 2), (4, 2)]);
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
            sha256: String::new(),
        };
        assert_eq!(missing(&(0..10), &[], 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(missing(&(0..10), &[rec(0, 4), rec(8, 2)], 4), vec![(4, 4)]);
        assert_eq!(missing(&(5..9), &[rec(5, 4)], 4), vec![]);
    }

    /// Deterministic fuzz of shard/sidecar sets: the shards of a run, then dropped, repeated,
    /// reordered, their data or sidecars swapped, replaced, truncated or edited. `merge` gives
    /// a clean one-line error or exactly the unsharded run's items, and never changes a shard.
    #[test]
    fn fuzz_shard_and_sidecar_sets() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed, TestRunner};

        #[derive(Clone, Debug)]
        enum Edit {
            Drop(usize),
            Repeat(usize),
            Rotate(usize),
            SwapData(usize, usize),
            SwapMeta(usize, usize),
            Range(usize, u64, u64),
            ShardField(usize, u64, u64),
            Total(usize, u64),
            OtherData(usize),
            Truncate(usize, usize),
            Garbage(usize),
            NoHash(usize),
        }
        let ix = 0usize..4;
        let edit = prop_oneof![
            ix.clone().prop_map(Edit::Drop),
            ix.clone().prop_map(Edit::Repeat),
            ix.clone().prop_map(Edit::Rotate),
            (ix.clone(), ix.clone()).prop_map(|(a, b)| Edit::SwapData(a, b)),
            (ix.clone(), ix.clone()).prop_map(|(a, b)| Edit::SwapMeta(a, b)),
            (ix.clone(), 0u64..30, 0u64..30).prop_map(|(i, a, b)| Edit::Range(i, a, b)),
            (ix.clone(), 0u64..6, 0u64..6).prop_map(|(i, k, n)| Edit::ShardField(i, k, n)),
            (ix.clone(), prop_oneof![0u64..30, Just(u64::MAX)])
                .prop_map(|(i, t)| Edit::Total(i, t)),
            ix.clone().prop_map(Edit::OtherData),
            (ix.clone(), 0usize..400).prop_map(|(i, n)| Edit::Truncate(i, n)),
            ix.clone().prop_map(Edit::Garbage),
            ix.clone().prop_map(Edit::NoHash),
        ];
        let case = (1u64..20, 1u64..5, prop::collection::vec(edit, 0..3));
        let config = Config {
            cases: 400,
            rng_seed: RngSeed::Fixed(5),
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        runner
            .run(&case, |(total, n, edits)| {
                let dir = tempfile::tempdir().unwrap();
                let spec = RunSpec::new(
                    "solve",
                    serde_json::json!({"seed": 1}),
                    total,
                    vec![2],
                    "f64",
                );
                let item = |i: u64, j: usize| i as f64 * 2.0 + j as f64 + 0.25;
                let whole =
                    ndarray::Array2::from_shape_fn((total as usize, 2), |(i, j)| item(i as u64, j))
                        .into_dyn();
                let mut files = Vec::new();
                for k in 1..=n {
                    let shard = Shard { k, n };
                    let r = shard.range(total);
                    let a = whole
                        .slice(ndarray::s![r.start as usize..r.end as usize, ..])
                        .to_owned()
                        .into_dyn();
                    let p = dir.path().join(format!("s{k}.npy"));
                    write_npy_atomic(&p, &a).unwrap();
                    let meta = Meta {
                        itoflow: "test".into(),
                        spec: spec.clone(),
                        shard,
                        range: [r.start, r.end],
                        summary: Value::Null,
                    };
                    write_meta(&p, &meta).unwrap();
                    files.push(p);
                }
                let meta_of = |p: &Path| sidecar(p, ".meta.json");
                let edit_meta = |p: &Path, f: &dyn Fn(&mut Value)| {
                    // (A sidecar already made garbage stays garbage.)
                    let text = fs::read(meta_of(p)).unwrap();
                    if let Ok(mut v) = serde_json::from_slice::<Value>(&text) {
                        f(&mut v);
                        fs::write(meta_of(p), serde_json::to_vec(&v).unwrap()).unwrap();
                    }
                };
                let mut list = files.clone();
                for e in &edits {
                    let len = files.len();
                    match *e {
                        Edit::Drop(i) if !list.is_empty() => {
                            let at = i % list.len();
                            list.remove(at);
                        }
                        Edit::Repeat(i) if !list.is_empty() => {
                            list.push(list[i % list.len()].clone())
                        }
                        Edit::Rotate(i) if !list.is_empty() => {
                            let l = list.len();
                            list.rotate_left(i % l)
                        }
                        Edit::SwapData(a, b) => {
                            let (a, b) = (&files[a % len], &files[b % len]);
                            let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
                            fs::write(a, y).unwrap();
                            fs::write(b, x).unwrap();
                        }
                        Edit::SwapMeta(a, b) => {
                            let (a, b) = (meta_of(&files[a % len]), meta_of(&files[b % len]));
                            let (x, y) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
                            fs::write(&a, y).unwrap();
                            fs::write(&b, x).unwrap();
                        }
                        Edit::Range(i, x, y) => {
                            edit_meta(&files[i % len], &|v| v["range"] = serde_json::json!([x, y]))
                        }
                        Edit::ShardField(i, k, m) => edit_meta(&files[i % len], &|v| {
                            v["shard"] = serde_json::json!({"k": k, "n": m})
                        }),
                        Edit::Total(i, t) => {
                            edit_meta(&files[i % len], &|v| v["spec"]["total"] = t.into())
                        }
                        Edit::OtherData(i) => {
                            let p = &files[i % len];
                            if let Ok(a) = parse_npy::<f64>(&fs::read(p).unwrap(), "x") {
                                fs::write(p, npy_bytes(&a.mapv(|v| v + 1.0)).unwrap()).unwrap();
                            }
                        }
                        Edit::Truncate(i, keep) => {
                            let p = &files[i % len];
                            let b = fs::read(p).unwrap();
                            fs::write(p, &b[..keep.min(b.len())]).unwrap();
                        }
                        Edit::Garbage(i) => {
                            fs::write(meta_of(&files[i % len]), b"{\"itoflow\": [").unwrap()
                        }
                        Edit::NoHash(i) => edit_meta(&files[i % len], &|v| {
                            if let Some(o) = v.as_object_mut() {
                                o.remove("sha256");
                            }
                        }),
                        _ => {}
                    }
                }
                let before: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
                let out = dir.path().join("merged.npy");
                match merge(&out, &list) {
                    Ok(meta) => {
                        let got: ArrayD<f64> =
                            parse_npy(&fs::read(&out).unwrap(), "merged").unwrap();
                        prop_assert_eq!(&got, &whole);
                        prop_assert_eq!(meta.spec.total, total);
                    }
                    Err(e) => {
                        let text = format!("{e:#}");
                        prop_assert!(!text.contains('\n'), "{}", text);
                        prop_assert!(!out.exists());
                    }
                }
                let after: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
                prop_assert_eq!(before, after);
                Ok(())
            })
            .unwrap();
    }
}
