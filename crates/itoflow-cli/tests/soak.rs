//! Kill-and-resume soak: `sample`, `likelihood` and `solve` runs are killed (SIGKILL) at
//! random points — during start-up, in a chunk, while a chunk, the progress file or the output
//! is being written — at least ten times each, and continued with `--resume` (or started again
//! when no chunk had been recorded yet). The output ends bitwise equal to an uninterrupted
//! run, and nothing is left behind (no parts, progress, lock or temporary file).
//!
//! The kill times are drawn from a seeded generator, scaled by the measured length of an
//! uninterrupted run so that each attempt finishes about one or two chunks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("itoflow-cache")
}

fn itoflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_itoflow"));
    c.env("ITOFLOW_CACHE", cache())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// SplitMix64 (Steele, Lea & Flood 2014): the kill times.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn run_to_end(args: &[&str], out: &Path, extra: &[&str]) -> Duration {
    let t = Instant::now();
    let o = itoflow()
        .args(args)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    t.elapsed()
}

/// Kills `args` at least `kills` times, then lets it finish (`tiny`: flags that make it one
/// item, to measure the start-up).
fn soak(args: &[&str], tiny: &[&str], chunks: u32, seed: u64, kills: u32) {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.npy");
    let length = run_to_end(args, &whole, &[]);
    let start_up = run_to_end(args, &dir.path().join("tiny.npy"), tiny);
    // An attempt lives for up to its start-up and about three chunks.
    let chunk = length.saturating_sub(start_up) / chunks;
    let window = start_up.as_secs_f64() * 1.5 + chunk.as_secs_f64() * 3.0;
    let out = dir.path().join("run.npy");
    let progress = dir.path().join("run.npy.progress.json");
    let mut rng = SplitMix(seed);
    let mut killed = 0;
    let mut attempts = 0;
    // Items recorded as finished at each kill.
    let mut recorded = Vec::new();
    let finished = || -> u64 {
        std::fs::read(&progress)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["done"]
                    .as_array()
                    .map(|d| d.iter().map(|r| r["count"].as_u64().unwrap_or(0)).sum())
            })
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    loop {
        attempts += 1;
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "{args:?}: {killed} kills in {attempts} attempts"
        );
        let resume = progress.exists();
        let mut cmd = itoflow();
        cmd.args(args).arg("--out").arg(&out);
        if resume {
            cmd.arg("--resume");
        }
        let mut child = cmd.spawn().unwrap();
        if killed < kills {
            std::thread::sleep(Duration::from_secs_f64(rng.next() * window));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                recorded.push(finished());
                continue;
            }
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{args:?} (resume: {resume}): {err}");
        if killed >= kills {
            break;
        }
        // Finished before enough kills: start the whole run again.
        for suffix in ["", ".meta.json"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", out.display()));
        }
    }
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&out).unwrap(),
        "{args:?}: {killed} kills"
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run.npy") && n != "run.npy" && n != "run.npy.meta.json")
        .collect();
    assert!(left.is_empty(), "{args:?}: left behind {left:?}");
    eprintln!(
        "{}: {killed} kills in {attempts} attempts (items finished at each kill: {recorded:?}), bitwise equal",
        args[0]
    );
    // The kills fell at different stages of the run, most with work to resume.
    recorded.dedup();
    assert!(recorded.len() >= 3, "{args:?}: {recorded:?}");
}

#[test]
fn sample_survives_ten_kills() {
    soak(
        &[
            "sample",
            "--sampler",
            "em",
            "--steps",
            "200",
            "-n",
            "40",
            "--batch",
            "1",
            "--threads",
            "1",
            "-q",
        ],
        &["-n", "1"],
        40,
        1,
        10,
    );
}

#[test]
fn likelihood_survives_ten_kills() {
    soak(
        &[
            "likelihood",
            "-n",
            "30",
            "--batch",
            "1",
            "--trace",
            "hutchinson:1",
            "--rtol",
            "1e-3",
            "--atol",
            "1e-3",
            "--threads",
            "1",
            "-q",
        ],
        &["-n", "1"],
        30,
        2,
        10,
    );
}

#[test]
fn solve_survives_ten_kills() {
    soak(
        &[
            "solve",
            "ou",
            "--paths",
            "40000",
            "--steps",
            "200",
            "--batch",
            "1000",
            "--save-every",
            "100",
            "-q",
        ],
        &["--paths", "1"],
        40,
        3,
        10,
    );
}
