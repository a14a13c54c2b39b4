//! End-to-end tests of `itoflow solve` and of the shard / merge / resume machinery, running the
//! real binary.

use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn itoflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_itoflow"))
}

fn json_out(args: &[&str]) -> Value {
    let out = itoflow().args(args).arg("--json").assert().success();
    serde_json::from_slice(&out.get_output().stdout).expect("JSON record")
}

#[test]
fn gbm_mean_and_std_at_t() {
    let v = json_out(&[
        "solve", "gbm", "--mu", "0.05", "--sigma", "0.2", "--x0", "1", "--paths", "20000",
        "--steps", "100", "--seed", "3",
    ]);
    let s = &v["stats_at_t1"][0];
    let (mean, std) = (s["mean"].as_f64().unwrap(), s["std"].as_f64().unwrap());
    // E[X_1] = e^{0.05}, sd = e^{0.05} sqrt(e^{0.04} - 1).
    let m = 0.05f64.exp();
    let sd = m * (0.04f64.exp() - 1.0).sqrt();
    assert!(
        (mean - m).abs() < 4.0 * sd / 20000f64.sqrt(),
        "{mean} vs {m}"
    );
    assert!((std - sd).abs() < 0.02, "{std} vs {sd}");
    assert_eq!(v["solver"], "em");
    assert_eq!(v["paths"], 20000);
    let q = &s["quantiles"];
    assert!(q["0.05"].as_f64() < q["0.5"].as_f64() && q["0.5"].as_f64() < q["0.95"].as_f64());
}

#[test]
fn every_sde_solver_gets_the_gbm_mean() {
    // Catalog defaults: μ = 1.01, σ = 0.87, x0 = ½ on [0, 1]; E[X_1] = ½ e^{1.01}.
    let exact = 0.5 * 1.01f64.exp();
    for solver in ["em", "milstein", "heun", "pc-euler"] {
        let v = json_out(&[
            "solve", "gbm", "--solver", solver, "--paths", "20000", "--steps", "64",
        ]);
        let m = v["stats_at_t1"][0]["mean"].as_f64().unwrap();
        // sd(X_1) ≈ 1.6 → standard error ≈ 0.011; weak error O(1/64).
        assert!((m - exact).abs() < 0.08, "{solver}: {m} vs {exact}");
        assert_eq!(v["params"]["mu"], 1.01);
    }
    let v = json_out(&[
        "solve", "ou", "--theta", "2", "--mu", "1", "--sigma", "0", "--x0", "0",
    ]);
    assert_eq!(v["solver"], "rk45"); // no noise: the ODE solver by default
    let m = v["stats_at_t1"][0]["mean"].as_f64().unwrap();
    assert!((m - (1.0 - (-4.0f64).exp())).abs() < 1e-6, "{m}");
}

#[test]
fn ode_problem_uses_rk45_and_table_output() {
    itoflow()
        .args([
            "solve", "lorenz", "--alpha", "0", "--paths", "2", "--t1", "0.5",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("lorenz (sigma = 10")
                .and(predicate::str::contains("2 paths, rk45")),
        )
        .stdout(predicate::str::contains("x2"));
    // Fixed-step RK4 agrees with RK45 on a smooth problem.
    let a = json_out(&[
        "solve",
        "van-der-pol",
        "--paths",
        "1",
        "--t1",
        "2",
        "--solver",
        "rk4",
    ]);
    let b = json_out(&["solve", "van-der-pol", "--paths", "1", "--t1", "2"]);
    let x = |v: &Value| v["stats_at_t1"][0]["mean"].as_f64().unwrap();
    assert!((x(&a) - x(&b)).abs() < 1e-6);
}

#[test]
fn csv_and_npy_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("ou.csv");
    itoflow()
        .args([
            "solve",
            "ou",
            "--paths",
            "3",
            "--steps",
            "10",
            "--save-every",
            "5",
            "-q",
        ])
        .arg("--out")
        .arg(&csv)
        .assert()
        .success();
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines[0], "path,t,x0");
    assert_eq!(lines.len(), 1 + 3 * 3);
    assert!(lines[1].starts_with("0,0,1"));
    let npy = dir.path().join("ou.npy");
    itoflow()
        .args([
            "solve",
            "ou",
            "--paths",
            "3",
            "--steps",
            "10",
            "--save-every",
            "5",
            "-q",
        ])
        .arg("--out")
        .arg(&npy)
        .assert()
        .success();
    let a: ndarray::ArrayD<f64> = ndarray_npy::read_npy(&npy).unwrap();
    assert_eq!(a.shape(), &[3, 3, 1]);
    assert!(dir.path().join("ou.npy.meta.json").exists());
    assert!(!dir.path().join("ou.npy.parts").exists());
}

fn solve_to(out: &Path, extra: &[&str]) {
    itoflow()
        .args([
            "solve", "gbm", "--paths", "103", "--steps", "50", "--seed", "9", "-q",
        ])
        .args(["--save-every", "10", "--out"])
        .arg(out)
        .args(extra)
        .assert()
        .success();
}

#[test]
fn shards_merge_bitwise_to_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.npy");
    solve_to(&whole, &["--batch", "1000"]);
    let mut shards = Vec::new();
    for (k, batch) in [(1, "7"), (2, "100"), (3, "1")] {
        let p = dir.path().join(format!("s{k}.npy"));
        solve_to(&p, &["--shard", &format!("{k}/3"), "--batch", batch]);
        shards.push(p);
    }
    let merged = dir.path().join("merged.npy");
    // Incomplete: shard 2 missing.
    itoflow()
        .arg("merge")
        .arg(&merged)
        .arg(&shards[0])
        .arg(&shards[2])
        .assert()
        .failure()
        .stderr(predicate::str::starts_with(
            "error: incomplete: items 34..68",
        ));
    // Overlap.
    itoflow()
        .arg("merge")
        .arg(&merged)
        .args([&shards[0], &shards[0], &shards[1], &shards[2]])
        .assert()
        .failure()
        .stderr(predicate::str::contains("overlaps"));
    // Only likelihood outputs merge into JSON.
    itoflow()
        .arg("merge")
        .arg(dir.path().join("merged.json"))
        .args(&shards)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "only likelihood outputs can be merged into .json",
        ));
    // Shards given in any order.
    itoflow()
        .arg("merge")
        .arg(&merged)
        .args([&shards[2], &shards[0], &shards[1]])
        .assert()
        .success()
        .stdout(predicate::str::contains("merged 3 shards: 103 items"));
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&merged).unwrap()
    );
    // A shard of a different run is refused.
    let other = dir.path().join("other.npy");
    itoflow()
        .args([
            "solve", "gbm", "--paths", "103", "--steps", "50", "--seed", "10", "-q",
        ])
        .args(["--save-every", "10", "--shard", "2/3", "--out"])
        .arg(&other)
        .assert()
        .success();
    itoflow()
        .arg("merge")
        .arg(&merged)
        .args([&shards[0], &other, &shards[2]])
        .assert()
        .failure()
        .stderr(predicate::str::contains("different run"));
    // So is a shard made by a build whose random streams differ (here: a file written before
    // the stream definition was recorded, which reads back as an empty one).
    let meta = dir.path().join("s2.npy.meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["spec"]["randomness"],
        itoflow_sde::brownian::STREAM_DEFINITION
    );
    v["spec"].as_object_mut().unwrap().remove("randomness");
    std::fs::write(&meta, serde_json::to_string(&v).unwrap()).unwrap();
    itoflow()
        .arg("merge")
        .arg(&merged)
        .args([&shards[0], &shards[1], &shards[2]])
        .assert()
        .failure()
        .stderr(predicate::str::contains("different run"));
}

#[test]
fn resume_after_kill_is_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "solve",
        "ou",
        "--paths",
        "60000",
        "--steps",
        "2000",
        "--batch",
        "3000",
        "--seed",
        "5",
        "-q",
        "--save-every",
        "1000",
    ];
    let whole = dir.path().join("whole.npy");
    itoflow()
        .args(args)
        .arg("--out")
        .arg(&whole)
        .assert()
        .success();

    let out = dir.path().join("run.npy");
    let progress = dir.path().join("run.npy.progress.json");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_itoflow"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !progress.exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no chunk written");
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(killed, "the run finished before it could be interrupted");
    assert!(!out.exists());
    let done: Value = serde_json::from_slice(&std::fs::read(&progress).unwrap()).unwrap();
    let chunks_before = done["done"].as_array().unwrap().len();
    assert!((1..20).contains(&chunks_before));

    let v: Value = serde_json::from_slice(
        &itoflow()
            .args(args)
            .arg("--out")
            .arg(&out)
            .args(["--resume", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    )
    .unwrap();
    assert!(v["resumed_paths"].as_u64().unwrap() >= 3000);
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&out).unwrap());
    assert!(!progress.exists());
    // Resuming a finished run does nothing.
    itoflow()
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--resume")
        .assert()
        .success()
        .stdout(predicate::str::contains("already complete"));
    // Resuming with other parameters is refused.
    itoflow()
        .args(["solve", "ou", "--paths", "10", "-q", "--resume", "--out"])
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains("nothing to resume"));
}

#[test]
fn user_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["solve".into(), "gbm".into(), "--steps".into(), "x".into()],
            "invalid value 'x'",
        ),
        (
            vec!["solve".into(), "gbm".into(), "--paths".into(), "0".into()],
            "--paths",
        ),
        (
            vec!["solve".into(), "nope".into()],
            "unrecognized subcommand 'nope'",
        ),
        (
            vec![
                "solve".into(),
                "gbm".into(),
                "--solver".into(),
                "rk45".into(),
            ],
            "has noise",
        ),
        (
            vec!["solve".into(), "lorenz".into(), "--x0".into(), "1,2".into()],
            "needs 3",
        ),
        (
            vec!["solve".into(), "gbm".into(), "--t1".into(), "0".into()],
            "--t1 must differ",
        ),
        (
            vec!["solve".into(), "gbm".into(), "--shard".into(), "4/3".into()],
            "not a shard",
        ),
        (
            vec!["solve".into(), "gbm".into(), "--resume".into()],
            "--resume needs an output",
        ),
        (
            vec![
                "solve".into(),
                "gbm".into(),
                "--out".into(),
                "/nonexistent/dir/x.npy".into(),
            ],
            "cannot write '/nonexistent/dir/x.npy'",
        ),
        (
            vec![
                "solve".into(),
                "gbm".into(),
                "--out".into(),
                dir.path().join("x.txt").display().to_string(),
            ],
            "expected a .npy or .csv",
        ),
        (
            vec![
                "merge".into(),
                "m.npy".into(),
                dir.path().join("missing.npy").display().to_string(),
            ],
            "does not exist",
        ),
    ];
    for (args, needle) in cases {
        let out = itoflow().args(&args).assert().failure();
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn adaptive_solvers_meet_their_tolerance_and_report_steps() {
    // GBM with SRIW1 to rtol 1e-3: E[X_1] = ½ e^{1.01} within 4 standard errors plus a bias
    // allowance; the accepted and rejected counts are reported.
    let v = json_out(&[
        "solve",
        "gbm",
        "--solver",
        "sri",
        "--adaptive",
        "--paths",
        "4000",
        "--rtol",
        "1e-3",
    ]);
    assert_eq!(v["solver"], "sri");
    let m = v["stats_at_t1"][0]["mean"].as_f64().unwrap();
    let exact = 0.5 * 1.01f64.exp();
    assert!((m - exact).abs() < 0.1, "{m} vs {exact}");
    let a = &v["adaptive"];
    assert!(a["accepted"].as_u64().unwrap() >= 4000);
    assert!(a["rejected"].as_u64().is_some());
    assert_eq!(a["rtol"], 1e-3);
    // SRA1 on the additive problem: the human summary names the steps.
    itoflow()
        .args([
            "solve",
            "additive",
            "--solver",
            "sra1",
            "--adaptive",
            "--paths",
            "50",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("sra1, adaptive")
                .and(predicate::str::contains("accepted"))
                .and(predicate::str::contains("rejected")),
        );
    // Tolerances alone ask for adaptive steps, with the strong-order-1.5 method for the noise
    // when no solver is given: the same numbers as naming it with --adaptive.
    for (problem, solver) in [("gbm", "sri"), ("additive", "sra1")] {
        let implied = json_out(&["solve", problem, "--paths", "64", "--rtol", "1e-3"]);
        let named = json_out(&[
            "solve",
            problem,
            "--solver",
            solver,
            "--adaptive",
            "--paths",
            "64",
            "--rtol",
            "1e-3",
        ]);
        assert_eq!(implied["solver"], solver, "{problem}");
        assert_eq!(implied["stats_at_t1"], named["stats_at_t1"], "{problem}");
        assert_eq!(implied["adaptive"], named["adaptive"], "{problem}");
    }
    // The solver list is the library's.
    let help = itoflow()
        .args(["solve", "gbm", "--help"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&help.get_output().stdout).to_string();
    for m in itoflow_sde::MethodName::ALL {
        assert!(text.contains(m.name()), "--help lacks {}", m.name());
    }
}

#[test]
fn adaptive_shards_and_batches_merge_bitwise() {
    // Per-path step control on a Brownian tree: any batch and shard split gives the same bits.
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        itoflow()
            .args([
                "solve",
                "ou",
                "--solver",
                "sra3",
                "--adaptive",
                "--paths",
                "41",
                "--seed",
                "4",
                "--steps",
                "4",
                "--save-every",
                "2",
                "-q",
                "--out",
            ])
            .arg(out)
            .args(extra)
            .assert()
            .success();
    };
    let whole = dir.path().join("whole.npy");
    run(&whole, &["--batch", "1000"]);
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    run(&a, &["--shard", "1/2", "--batch", "3"]);
    run(&b, &["--shard", "2/2", "--batch", "40"]);
    let merged = dir.path().join("merged.npy");
    itoflow()
        .arg("merge")
        .arg(&merged)
        .args([&a, &b])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&merged).unwrap()
    );
    let x: ndarray::ArrayD<f64> = ndarray_npy::read_npy(&whole).unwrap();
    assert_eq!(x.shape(), &[41, 3, 1]);
}

#[test]
fn runaway_solves_stop_at_the_step_budget() {
    // Stiff problems that RK45 would integrate for hours: the default budget of 100 000
    // attempts per path stops them with the path and the time reached.
    for args in [
        &["solve", "lotka-volterra", "--a", "1e3", "--paths", "1"][..],
        &["solve", "van-der-pol", "--mu", "1e6", "--paths", "1"][..],
    ] {
        let start = Instant::now();
        let out = itoflow().args(args).assert().failure();
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(
            err.contains("maximum number of steps (100000) exceeded at t = ")
                && err.contains("path 0"),
            "{args:?}: {err}"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "{args:?}");
    }
    itoflow()
        .args(["solve", "van-der-pol", "--paths", "2", "--max-steps", "10"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("maximum number of steps (10)"));
    // Adaptive SDE solves share the budget.
    itoflow()
        .args([
            "solve",
            "gbm",
            "--solver",
            "sri",
            "--adaptive",
            "--rtol",
            "1e-9",
            "--paths",
            "1",
            "--max-steps",
            "50",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("maximum number of steps (50)"));
}

#[test]
fn overflowing_statistics_are_reported_as_a_blow_up() {
    // σ = 1e300: the paths stay finite but their variance overflows; the run fails naming the
    // path with the largest state instead of printing NaN statistics.
    let out = itoflow()
        .args(["solve", "ou", "--sigma", "1e300", "--paths", "10"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.starts_with("error: non-finite statistics of x0 at t = 2: path "),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1);
}

#[test]
fn adaptive_usage_errors_are_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["solve", "gbm", "--solver", "em", "--adaptive"],
            "--adaptive needs a solver with an error estimate",
        ),
        (
            &["solve", "mvou", "--rtol", "1e-3"],
            "none is chosen by default for mvou's noise",
        ),
        (
            &["solve", "gbm", "--solver", "em", "--rtol", "1e-3"],
            "--rtol and --atol set adaptive steps, which need a solver with an error estimate",
        ),
        (
            &[
                "solve",
                "gbm",
                "--solver",
                "sri",
                "--adaptive",
                "--rtol",
                "0",
            ],
            "--rtol and --atol must be positive",
        ),
        (
            &["solve", "gbm", "--solver", "sra1", "--adaptive"],
            "SRA1 does not support diagonal noise",
        ),
        (
            &["solve", "gbm", "--solver", "sra1"],
            "SRA1 does not support diagonal noise",
        ),
        (
            &["solve", "gbm", "--solver", "nope"],
            "invalid value 'nope'",
        ),
        (&["solve", "gbm", "--max-steps", "0"], "--max-steps"),
        (
            &["solve", "gbm", "--mu", "inf"],
            "--mu must be a finite number",
        ),
    ];
    for (args, needle) in cases {
        let out = itoflow().args(*args).assert().failure();
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A fixed grid larger than the memory available is refused before anything is allocated; a
/// fixed grid longer than --max-steps (which bounds adaptive step attempts) runs.
#[test]
fn grid_memory_is_checked_and_max_steps_bounds_adaptive_steps_only() {
    let out = itoflow()
        .env("ITOFLOW_MEMORY_LIMIT", "100000000")
        .args(["solve", "--steps", "100000000", "--paths", "1", "gbm"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("a grid of 100000000 steps needs"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    itoflow()
        .args([
            "solve",
            "--steps",
            "2000",
            "--max-steps",
            "100",
            "--paths",
            "2",
            "gbm",
        ])
        .assert()
        .success();
}
