//! Scale-out on a real Slurm cluster: Debian's `slurm-wlm` and `munge` are installed if needed,
//! a single-node cluster (munged, slurmctld, slurmd on localhost) is started for the test
//! (tests/slurm/cluster.sh), the shipped job-array script `examples/slurm/itoflow-array.sbatch`
//! is submitted as a 4-task array (`--array=1-4`: task ids from 1) that samples and scores with
//! `--shard auto`, the parts are merged, and the result is compared bitwise with one unsharded
//! run. The daemons are stopped afterwards, also when the test fails.
//!
//! Needs root (apt, the daemons). Without root the test says so and passes, except under CI
//! (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/cluster.sh")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The running cluster; stopped on drop.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Self {
        let c = Cluster {
            dir: dir.to_path_buf(),
        };
        sh(Command::new("bash").arg(script()).arg("start").arg(dir));
        c
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

#[test]
fn a_slurm_job_array_merges_bitwise_to_one_unsharded_run() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Slurm test needs root under CI (apt-get, munged, slurmctld, slurmd)"
        );
        eprintln!(
            "SKIPPED: the Slurm test needs root (apt-get install slurm-wlm munge; the daemons)"
        );
        return;
    }
    // One cluster at a time on this machine (fixed ports).
    let lock = std::fs::File::create(std::env::temp_dir().join("itoflow-slurm-test.lock")).unwrap();
    lock.lock().unwrap();
    let t0 = Instant::now();
    sh(Command::new("bash").arg(script()).arg("install"));
    let installed = t0.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"));
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let bin = env!("CARGO_BIN_EXE_itoflow");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("itoflow-cache");
    let sample_args = "--sampler em --steps 20";
    let ll_args = "-n 10 --trace hutchinson:1 --rtol 1e-3 --atol 1e-3";
    let submitted = Instant::now();
    let out = Command::new("timeout")
        .arg("300")
        .arg("sbatch")
        .args(["--wait", "--array=1-4", "--chdir"])
        .arg(&work)
        .arg("--output")
        .arg(work.join("task-%a.log"))
        .arg(repo().join("examples/slurm/itoflow-array.sbatch"))
        .env("SLURM_CONF", cluster.conf())
        .env("ITOFLOW", bin)
        .env("ITOFLOW_CACHE", &cache)
        .env("OUTDIR", work.join("out"))
        .env("SAMPLES", "14")
        .env("SAMPLE_ARGS", sample_args)
        .env("LIKELIHOOD_ARGS", ll_args)
        .output()
        .unwrap();
    let logs: String = (1..=4)
        .map(|k| std::fs::read_to_string(work.join(format!("task-{k}.log"))).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success(),
        "sbatch: {}{}\ntask logs:\n{logs}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = submitted.elapsed();
    // Each task said which shard it took from Slurm's variables.
    for k in 1..=4 {
        assert!(
            logs.contains(&format!("shard {k}/4 from Slurm: SLURM_ARRAY_TASK_ID={k}")),
            "{logs}"
        );
    }
    drop(cluster);

    let o = work.join("out");
    let parts = |stem: &str| -> Vec<PathBuf> {
        (1..=4).map(|k| o.join(format!("{stem}-{k}.npy"))).collect()
    };
    let itoflow = || {
        let mut c = Command::new(bin);
        c.env("ITOFLOW_CACHE", &cache);
        c
    };
    sh(itoflow()
        .arg("merge")
        .arg(o.join("samples.npy"))
        .args(parts("samples")));
    sh(itoflow()
        .arg("merge")
        .arg(o.join("likelihood.npy"))
        .args(parts("likelihood")));
    sh(itoflow()
        .args(["sample", "-n", "14", "-q", "--threads", "1"])
        .args(sample_args.split(' '))
        .arg("--out")
        .arg(work.join("samples-whole.npy")));
    sh(itoflow()
        .args(["likelihood", "-q", "--threads", "1"])
        .args(ll_args.split(' '))
        .arg("--out")
        .arg(work.join("likelihood-whole.npy")));
    for name in ["samples", "likelihood"] {
        assert_eq!(
            std::fs::read(o.join(format!("{name}.npy"))).unwrap(),
            std::fs::read(work.join(format!("{name}-whole.npy"))).unwrap(),
            "{name}"
        );
    }
    eprintln!(
        "Slurm: install {:.1} s, 4-task array {:.1} s, total {:.1} s",
        installed.as_secs_f64(),
        ran.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(t0.elapsed() < Duration::from_secs(600));
}
