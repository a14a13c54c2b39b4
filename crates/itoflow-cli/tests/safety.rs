//! The user's files are safe, whatever the input: outputs never overwrite inputs or non-regular
//! files, huge sizes are refused before allocating, interrupted runs keep their finished work and
//! trust only chunks whose content hash matches, `merge` trusts only shards that match their
//! sidecars, a model cannot point itoflow at files outside its directory, and float data far
//! outside the model's range is refused. Each test reproduces a defect of issue 12.
//!
//! `ITOFLOW_TEST_BIN` runs these tests against another build of the binary (to show a defect
//! on a build that has it).

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use ndarray::{Array2, ArrayD};
use ndarray_npy::{read_npy, write_npy};
use serde_json::Value;

fn bin() -> PathBuf {
    std::env::var_os("ITOFLOW_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_itoflow")))
}

fn itoflow() -> Command {
    let mut c = Command::new(bin());
    c.env("ITOFLOW_CACHE", cache())
        .timeout(Duration::from_secs(120));
    c
}

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("itoflow-cache")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model() -> PathBuf {
    repo().join("models/digits/digits.onnx")
}

/// A failure with a one-line message containing `needle` and an ordinary exit status (1 or 2:
/// not a panic's 101, not an abort or a signal).
fn refused(c: &mut Command, needle: &str) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out.status.code();
    assert!(
        matches!(code, Some(1 | 2)),
        "exit status {:?}, stderr: {err}",
        out.status
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note: ")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    err
}

fn ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const FAST_LL: &[&str] = &[
    "likelihood",
    "--trace",
    "hutchinson:1",
    "--rtol",
    "1e-2",
    "--atol",
    "1e-2",
    "--threads",
    "1",
    "-q",
];

/// Defect 1: an output that is an input — by name, through a symbolic link or a hard link — is
/// refused and the input is left as it was; the same for `merge` and its shards.
#[test]
fn an_output_that_is_an_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("x.npy");
    std::fs::copy(repo().join("models/digits/likelihood_inputs.npy"), &data).unwrap();
    let before = std::fs::read(&data).unwrap();
    let soft = dir.path().join("soft.npy");
    std::os::unix::fs::symlink(&data, &soft).unwrap();
    let hard = dir.path().join("hard.npy");
    std::fs::hard_link(&data, &hard).unwrap();
    for (d, o) in [(&data, &data), (&soft, &data), (&data, &hard)] {
        refused(
            itoflow()
                .args(FAST_LL)
                .args(["-n", "1", "--model"])
                .arg(model())
                .arg("--data")
                .arg(d)
                .arg("--out")
                .arg(o),
            "is the same file as --data",
        );
        assert_eq!(std::fs::read(&data).unwrap(), before);
    }
    // merge: the output may be none of the shards.
    let s1 = dir.path().join("s1.npy");
    let s2 = dir.path().join("s2.npy");
    for (k, s) in [(1, &s1), (2, &s2)] {
        ok(itoflow()
            .args(["solve", "ou", "--paths", "10", "--steps", "10", "-q"])
            .args(["--shard", &format!("{k}/2"), "--out"])
            .arg(s));
    }
    let shard = std::fs::read(&s1).unwrap();
    refused(
        itoflow().arg("merge").arg(&s1).arg(&s1).arg(&s2),
        "is the same file as the shard",
    );
    assert_eq!(std::fs::read(&s1).unwrap(), shard);
    // Nor is a grid that links to another file.
    let png = dir.path().join("keep.png");
    std::fs::write(&png, b"png").unwrap();
    let grid = dir.path().join("grid.png");
    std::os::unix::fs::symlink(&png, &grid).unwrap();
    refused(
        itoflow()
            .args([
                "sample",
                "-n",
                "1",
                "--steps",
                "2",
                "--sampler",
                "em",
                "-q",
                "--out",
            ])
            .arg(dir.path().join("s.npy"))
            .arg("--grid")
            .arg(&grid),
        "--grid '",
    );
    assert_eq!(std::fs::read(&png).unwrap(), b"png");
}

/// An `.npy` header (version 1) for `descr` and `shape`.
fn npy_header(descr: &str, shape: &str) -> Vec<u8> {
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((text.len() as u16).to_le_bytes());
    b.extend(text.as_bytes());
    b
}

/// Defect 2: sizes that cannot be allocated are one-line errors naming the size, not aborts.
#[test]
fn huge_sizes_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.npy");
    let mut bytes = npy_header("<f4", "(1000000000000, 1, 8, 8)");
    bytes.extend([0u8; 64]);
    std::fs::write(&big, &bytes).unwrap();
    refused(
        itoflow()
            .args(FAST_LL)
            .arg("--model")
            .arg(model())
            .arg("--data")
            .arg(&big)
            .arg("--out")
            .arg(dir.path().join("ll.npy")),
        "declares shape [1000000000000, 1, 8, 8] of <f4 (256.0 TB), but holds 64 B",
    );
    refused(
        itoflow()
            .args([
                "sample",
                "--sampler",
                "ddim",
                "--steps",
                "100000000000",
                "--out",
            ])
            .arg(dir.path().join("s.npy")),
        "--steps",
    );
    refused(
        itoflow()
            .args([
                "sample",
                "-n",
                "1000000000000",
                "--batch",
                "1000000000000",
                "--out",
            ])
            .arg(dir.path().join("s.npy")),
        "of memory, more than",
    );
    refused(
        itoflow()
            .args([
                "solve",
                "gbm",
                "--paths",
                "100000000",
                "--steps",
                "100000000",
            ])
            .args(["--save-every", "1", "--out"])
            .arg(dir.path().join("big-paths.npy")),
        "PB of memory, more than",
    );
    // A limit set for the job (as a cgroup would) is honoured and named.
    refused(
        itoflow()
            .env("ITOFLOW_MEMORY_LIMIT", "1000000")
            .args(["solve", "gbm", "--paths", "10000", "--steps", "100"])
            .args(["--save-every", "1", "--out"])
            .arg(dir.path().join("p.npy")),
        "needs 16.2 MB of memory, more than the 1.0 MB available",
    );
    assert!(!dir.path().join("p.npy").exists());
}

/// Starts a sample run of `n` single-sample chunks writing `out`, and returns it once
/// `chunks` chunks are recorded as finished.
fn interrupted_run(args: &[&str], out: &Path, chunks: usize) -> Child {
    let progress = out.with_extension("npy.progress.json");
    let mut child = std::process::Command::new(bin())
        .env("ITOFLOW_CACHE", cache())
        .args(args)
        .arg("--out")
        .arg(out)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let done = std::fs::read(&progress)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map_or(0, |v| v["done"].as_array().map_or(0, Vec::len));
        if done >= chunks {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {chunks} chunks were recorded"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "no chunk written");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

/// Defects 4, 7 (lock) and 8: while a run writes an output a second run is refused and told
/// who holds it; after an interruption a rerun without `--resume` keeps the finished chunks
/// (refused unless `--overwrite`); `--resume` recomputes chunks whose files were replaced — by
/// a 0-d array or by other numbers of the same shape — and ends bitwise equal to an
/// uninterrupted run.
#[test]
fn interrupted_runs_keep_their_work_and_trust_only_intact_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "sample",
        "--sampler",
        "pc",
        "--steps",
        "500",
        "-n",
        "16",
        "--batch",
        "1",
        "--threads",
        "1",
        "-q",
    ];
    let whole = dir.path().join("whole.npy");
    ok(itoflow().args(args).arg("--out").arg(&whole));
    let out = dir.path().join("run.npy");
    let mut child = interrupted_run(&args, &out, 3);
    let err = refused(
        itoflow().args(args).arg("--out").arg(&out),
        "is being written by another run (process ",
    );
    assert!(
        err.contains(&format!("process {} on ", child.id())),
        "{err}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Rerunning without --resume would discard the finished chunks: refused.
    refused(
        itoflow().args(args).arg("--out").arg(&out),
        "add --resume to continue it or --overwrite to discard it",
    );
    // Damage two finished chunks.
    let parts = dir.path().join("run.npy.parts");
    write_npy(
        parts.join("chunk-000000000000.npy"),
        &ArrayD::<f32>::zeros(vec![]),
    )
    .unwrap();
    let c1 = parts.join("chunk-000000000001.npy");
    let a: ArrayD<f32> = read_npy(&c1).unwrap();
    write_npy(&c1, &a.mapv(|v| v * 0.5)).unwrap();
    let out_put = ok(itoflow()
        .args(args)
        .arg("--out")
        .arg(&out)
        .args(["--resume", "--json"]));
    let err = String::from_utf8_lossy(&out_put.stderr);
    for items in ["items 0..1", "items 1..2"] {
        assert!(
            err.lines()
                .any(|l| l.contains(items) && l.contains("content hash differs")),
            "{err}"
        );
    }
    let v: Value = serde_json::from_slice(&out_put.stdout).unwrap();
    assert!(v["resumed_samples"].as_u64().unwrap() >= 1);
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&out).unwrap());
    assert!(!parts.exists() && !dir.path().join("run.npy.lock").exists());

    // --overwrite starts an interrupted run over.
    let mut child = interrupted_run(&args, &out, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    ok(itoflow()
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--overwrite"));
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&out).unwrap());
}

/// Defect 5: `merge` checks each shard against its sidecar: data from another run under the
/// right sidecar, swapped sidecars and an edited range are refused.
#[test]
fn merge_checks_shards_against_their_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let solve = |seed: &str, k: u64, out: &Path| {
        ok(itoflow()
            .args(["solve", "gbm", "--paths", "9", "--steps", "20", "-q"])
            .args(["--seed", seed, "--shard", &format!("{k}/3"), "--out"])
            .arg(out));
    };
    let s: Vec<PathBuf> = (1..=3)
        .map(|k| {
            let p = dir.path().join(format!("s{k}.npy"));
            solve("1", k, &p);
            p
        })
        .collect();
    let merged = dir.path().join("m.npy");
    ok(itoflow().arg("merge").arg(&merged).args(&s));
    // Another seed's shard 2 under shard 2's sidecar.
    let other = dir.path().join("other.npy");
    solve("2", 2, &other);
    let good = std::fs::read(&s[1]).unwrap();
    std::fs::copy(&other, &s[1]).unwrap();
    refused(
        itoflow().arg("merge").arg(&merged).args(&s),
        "s2.npy' does not match its metadata",
    );
    std::fs::write(&s[1], &good).unwrap();
    // Swapped sidecars of two shards (the same shape: 3 paths each).
    let meta = |p: &Path| PathBuf::from(format!("{}.meta.json", p.display()));
    let (m1, m2) = (
        std::fs::read(meta(&s[0])).unwrap(),
        std::fs::read(meta(&s[1])).unwrap(),
    );
    std::fs::write(meta(&s[0]), &m2).unwrap();
    std::fs::write(meta(&s[1]), &m1).unwrap();
    refused(
        itoflow().arg("merge").arg(&merged).args(&s),
        "does not match its metadata",
    );
    std::fs::write(meta(&s[0]), &m1).unwrap();
    std::fs::write(meta(&s[1]), &m2).unwrap();
    // Ranges swapped by editing the sidecars.
    let mut v1: Value = serde_json::from_slice(&m1).unwrap();
    let mut v2: Value = serde_json::from_slice(&m2).unwrap();
    let r1 = v1["range"].clone();
    v1["range"] = v2["range"].clone();
    v2["range"] = r1;
    std::fs::write(meta(&s[0]), serde_json::to_vec(&v1).unwrap()).unwrap();
    std::fs::write(meta(&s[1]), serde_json::to_vec(&v2).unwrap()).unwrap();
    refused(
        itoflow().arg("merge").arg(&merged).args(&s),
        "the sidecar was edited or belongs to another file",
    );
    // No shards at all: one clean line.
    refused(
        itoflow().arg("merge").arg(&merged),
        "merge needs at least one shard file",
    );
    refused(
        itoflow().arg("merge"),
        "the following required arguments were not provided: <OUT>",
    );
}

/// Defect 6: the derivative graph a model names must lie in the model's directory.
#[test]
fn the_derivative_graph_is_confined_to_the_models_directory() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m").join("model.onnx");
    std::fs::create_dir(m.parent().unwrap()).unwrap();
    std::fs::copy(model(), &m).unwrap();
    let outside = dir.path().join("outside.onnx");
    std::fs::copy(repo().join("models/digits/digits.vjp.onnx"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.path().join("m/link.onnx")).unwrap();
    for (value, needle) in [
        (
            "../../../../etc/passwd",
            "absolute paths and `..` are refused",
        ),
        ("/etc/passwd", "absolute paths and `..` are refused"),
        ("../outside.onnx", "absolute paths and `..` are refused"),
        ("link.onnx", "leads outside the model's directory"),
    ] {
        refused(
            itoflow()
                .args(FAST_LL)
                .args(["-n", "1", "--model"])
                .arg(&m)
                .arg("--data")
                .arg(repo().join("models/digits/test_digits.npy"))
                .args(["--set", &format!("derivative={value}"), "--out"])
                .arg(dir.path().join("ll.npy")),
            needle,
        );
    }
    // Inside the directory it is used.
    std::fs::copy(&outside, dir.path().join("m/mine.onnx")).unwrap();
    let out = ok(itoflow()
        .args(["inspect", "--set", "derivative=mine.onnx"])
        .arg(&m));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mine.onnx"), "{text}");
}

/// Defect 7: a full disk during the final write leaves no temporary file (and the finished
/// chunks let `--resume` complete the run); outputs that are links or special files are refused.
#[test]
fn failed_writes_leave_no_temporary_file_and_special_outputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "sample",
        "--sampler",
        "em",
        "--steps",
        "5",
        "-n",
        "64",
        "--batch",
        "8",
        "--threads",
        "1",
        "-q",
    ];
    let out = dir.path().join("s.npy");
    // The uninterrupted run (which also puts the embedded model into the cache before the
    // file-size limit below applies).
    let whole = dir.path().join("whole.npy");
    ok(itoflow().args(args).arg("--out").arg(&whole));
    // File-size limit of 8 KiB: every 2 kB chunk fits, the 16 kB output does not (SIGXFSZ
    // ignored, so that the write fails with EFBIG as on a full disk).
    let cmd = format!(
        "trap '' XFSZ; ulimit -f 8; exec '{}' {} --out '{}'",
        bin().display(),
        args.join(" "),
        out.display()
    );
    let mut c = Command::new("bash");
    c.env("ITOFLOW_CACHE", cache()).args(["-c", &cmd]);
    refused(&mut c, "cannot write");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|n| n.ends_with(".tmp")), "{left:?}");
    assert!(!out.exists());
    ok(itoflow().args(args).arg("--out").arg(&out).arg("--resume"));
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&out).unwrap());

    // A symbolic link, a FIFO and a directory are not regular outputs.
    let target = dir.path().join("target.npy");
    std::fs::write(&target, b"keep").unwrap();
    let link = dir.path().join("link.npy");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    refused(
        itoflow().args(args).arg("--out").arg(&link),
        "is a symbolic link",
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    let fifo = dir.path().join("fifo.npy");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    refused(
        itoflow().args(args).arg("--out").arg(&fifo),
        "is not a regular file",
    );
    let d = dir.path().join("d.npy");
    std::fs::create_dir(&d).unwrap();
    refused(itoflow().args(args).arg("--out").arg(&d), "is a directory");
}

/// Defect 9 (likelihood): float data far outside the model's range are refused with the range
/// found; slightly outside, scored with a note.
#[test]
fn float_data_far_outside_the_models_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw: ArrayD<u8> = read_npy(repo().join("models/digits/test_digits.npy")).unwrap();
    let ll = |data: &Path| {
        let mut c = itoflow();
        c.args(FAST_LL)
            .args(["-n", "2", "--model"])
            .arg(model())
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(dir.path().join("ll.npy"));
        c
    };
    let levels = dir.path().join("levels.npy");
    write_npy(&levels, &raw.mapv(f32::from)).unwrap();
    refused(
        &mut ll(&levels),
        "holds float values in [0, 16], far outside the model's data range [-1, 1]",
    );
    let huge = dir.path().join("huge.npy");
    write_npy(&huge, &Array2::<f64>::from_elem((2, 64), 1e30)).unwrap();
    refused(&mut ll(&huge), "[1000000000000000000000000000000, ");
    let near = dir.path().join("near.npy");
    write_npy(&near, &Array2::<f32>::from_elem((2, 64), 1.25)).unwrap();
    let out = ok(&mut ll(&near));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("outside the model's data range [-1, 1]"),
        "{err}"
    );
}

/// Defect 10: the embedded model's cache is checked by content and rewritten when damaged.
#[test]
fn a_damaged_model_cache_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        ok(Command::new(bin())
            .env("ITOFLOW_CACHE", dir.path())
            .arg("inspect"))
    };
    run();
    let cached: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path().join("digits.onnx"))
        .collect();
    assert_eq!(cached.len(), 1);
    let good = std::fs::read(model()).unwrap();
    assert_eq!(std::fs::read(&cached[0]).unwrap(), good);
    // The same length, other bytes.
    let mut bad = good.clone();
    for b in bad.iter_mut().skip(100).take(64) {
        *b ^= 0x5a;
    }
    std::fs::write(&cached[0], &bad).unwrap();
    run();
    assert_eq!(std::fs::read(&cached[0]).unwrap(), good);
}
