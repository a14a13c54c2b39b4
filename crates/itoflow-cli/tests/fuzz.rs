//! Deterministic fuzz of command lines (fixed seed): random argument vectors for every command,
//! built from valid, boundary and hostile values (huge counts, negative and non-numeric
//! numbers, outputs that are inputs, links, devices, directories, broken files). The property:
//! an ordinary exit status (0, or 1/2 with a one-line message), no panic, no abort, no signal,
//! within a time budget, and no input file changed.
//!
//! Counts and steps are drawn small or hostile (beyond the limits): a legitimately long run is
//! not what this test looks for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use ndarray::{Array2, ArrayD};
use ndarray_npy::write_npy;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("itoflow-cache")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Most seconds one command may take (the slowest legitimate case here takes about 2 s).
const BUDGET: Duration = Duration::from_secs(60);

/// The fixed files the command lines refer to.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::copy(repo().join("models/digits/digits.onnx"), p("m.onnx")).unwrap();
        std::fs::copy(
            repo().join("models/digits/digits.vjp.onnx"),
            p("m.vjp.onnx"),
        )
        .unwrap();
        let digits: ArrayD<u8> =
            ndarray_npy::read_npy(repo().join("models/digits/test_digits.npy")).unwrap();
        write_npy(
            p("u8.npy"),
            &digits.slice(ndarray::s![..3, .., .., ..]).to_owned(),
        )
        .unwrap();
        write_npy(p("f32.npy"), &Array2::<f32>::from_elem((3, 64), 0.1)).unwrap();
        write_npy(p("wide.npy"), &Array2::<f32>::from_elem((3, 64), 40.0)).unwrap();
        write_npy(p("shape.npy"), &Array2::<f32>::zeros((3, 7))).unwrap();
        let mut big = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        let mut text =
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1, 8, 8), }"
                .to_string();
        while text.len() < 0x75 {
            text.push(' ');
        }
        text.push('\n');
        big.extend(text.as_bytes());
        big.extend([0u8; 32]);
        std::fs::write(p("big.npy"), big).unwrap();
        std::fs::write(p("junk.npy"), b"not an npy file").unwrap();
        std::fs::create_dir(p("dir.npy")).unwrap();
        std::os::unix::fs::symlink(p("f32.npy"), p("link.npy")).unwrap();
        for k in 1..=2 {
            let out = Command::new(env!("CARGO_BIN_EXE_itoflow"))
                .args(["solve", "ou", "--paths", "6", "--steps", "4", "-q"])
                .args(["--shard", &format!("{k}/2"), "--out"])
                .arg(p(&format!("s{k}.npy")))
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        Files { dir }
    }

    /// SHA-256-free fingerprint of every input: the bytes themselves (the files are small).
    fn inputs(&self) -> BTreeMap<String, Vec<u8>> {
        [
            "m.onnx",
            "m.vjp.onnx",
            "u8.npy",
            "f32.npy",
            "wide.npy",
            "shape.npy",
            "big.npy",
            "junk.npy",
            "s1.npy",
            "s1.npy.meta.json",
            "s2.npy",
            "s2.npy.meta.json",
        ]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read(self.dir.path().join(n)).unwrap(),
            )
        })
        .collect()
    }
}

fn pick(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(values).prop_map(str::to_string)
}

const COUNTS: &[&str] = &[
    "1",
    "2",
    "0",
    "-1",
    "1e3",
    "x",
    "",
    "1000000000000",
    "281474976710657",
    "18446744073709551616",
];
const STEPS: &[&str] = &[
    "1",
    "2",
    "5",
    "0",
    "-5",
    "1000000001",
    "100000000000",
    "2.5",
    "nan",
];
const REALS: &[&str] = &[
    "0.5", "1e-2", "0", "-1", "1e300", "-1e300", "nan", "inf", "1e-300", "x", "",
];
const OUTS: &[&str] = &[
    "o.npy",
    "o.json",
    "o.csv",
    "o.png",
    "f32.npy",
    "s1.npy",
    "link.npy",
    "dir.npy",
    "/dev/null",
    "/nonexistent/o.npy",
    "m.onnx",
];
const DATA: &[&str] = &[
    "u8.npy",
    "f32.npy",
    "wide.npy",
    "shape.npy",
    "big.npy",
    "junk.npy",
    "missing.npy",
    "dir.npy",
    "link.npy",
    "m.onnx",
];
const SHARDS: &[&str] = &[
    "1/2", "2/2", "0/2", "3/2", "auto", "auto/2", "auto/0", "1/0", "x", "",
];
const SETS: &[&str] = &[
    "sde=ve",
    "sde=nope",
    "itoflow.eps=0.5",
    "eps=-1",
    "data.shape=[2]",
    "data.shape=[1000000000000]",
    "data.range=[1,-1]",
    "derivative=../../etc/passwd",
    "derivative=/etc/passwd",
    "derivative=",
    "names.x=time",
    "names.output=eps",
    "sde.params={\"N\": 1000000000000}",
    "noequals",
    "=1",
    "made.up.key=1",
];

/// One flag and its value for `command` (`None`: a flag without a value).
fn flag(command: &'static str) -> BoxedStrategy<(String, Option<String>)> {
    let v = |name: &'static str, values: BoxedStrategy<String>| {
        values
            .prop_map(move |x| (name.to_string(), Some(x)))
            .boxed()
    };
    let bare = |name: &'static str| Just((name.to_string(), None)).boxed();
    let common = vec![
        v("--out", pick(OUTS).boxed()),
        v("--shard", pick(SHARDS).boxed()),
        v("--batch", pick(COUNTS).boxed()),
        v(
            "--seed",
            pick(&["0", "1", "-1", "18446744073709551615", "x"]).boxed(),
        ),
        bare("--resume"),
        bare("--overwrite"),
        bare("--json"),
    ];
    let mut model = vec![
        v(
            "--model",
            pick(&["m.onnx", "missing.onnx", "u8.npy", "dir.npy"]).boxed(),
        ),
        v("--set", pick(SETS).boxed()),
        v("--threads", pick(&["1", "0", "100000", "x"]).boxed()),
        v(
            "--device",
            pick(&["cpu", "auto", "cuda", "cuda:9", "tpu"]).boxed(),
        ),
    ];
    let specific = match command {
        "sample" => vec![
            v(
                "--sampler",
                pick(&[
                    "em",
                    "ddim",
                    "dpmpp-2m",
                    "edm-heun",
                    "ode",
                    "ancestral",
                    "magic",
                ])
                .boxed(),
            ),
            v("--steps", pick(STEPS).boxed()),
            v("-n", pick(COUNTS).boxed()),
            v("--eta", pick(REALS).boxed()),
            v("--churn", pick(REALS).boxed()),
            v("--rtol", pick(REALS).boxed()),
            v("--eps", pick(REALS).boxed()),
            v("--max-steps", pick(&["1", "0", "50", "x"]).boxed()),
            v(
                "--grid",
                pick(&["g.png", "g.jpg", "link.npy", "o.npy"]).boxed(),
            ),
        ],
        "likelihood" => vec![
            v("--data", pick(DATA).boxed()),
            v("-n", pick(&["1", "2", "0", "-1", "x"]).boxed()),
            v(
                "--trace",
                pick(&["exact", "hutchinson:0", "hutchinson:2", "magic"]).boxed(),
            ),
            v("--rtol", pick(REALS).boxed()),
            v("--eps", pick(REALS).boxed()),
            v("--max-steps", pick(&["1", "0", "x"]).boxed()),
            bare("--dequantize"),
        ],
        _ => vec![
            v("--paths", pick(COUNTS).boxed()),
            v("--steps", pick(STEPS).boxed()),
            v("--t1", pick(REALS).boxed()),
            v("--x0", pick(&["1", "1,2", "nan", "1e300", ""]).boxed()),
            v("--save-every", pick(&["1", "2", "0", "x"]).boxed()),
            v(
                "--solver",
                pick(&["em", "milstein", "heun", "rk4", "euler", "rk45", "magic"]).boxed(),
            ),
        ],
    };
    let mut all = common;
    if command != "solve" {
        all.append(&mut model);
    }
    all.extend(specific);
    prop::strategy::Union::new(all).boxed()
}

/// A command line: a fast base for the command, then random flags (later ones override).
fn command_line() -> impl Strategy<Value = Vec<String>> {
    let base = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    prop_oneof![
        3 => prop::collection::vec(flag("sample"), 0..5).prop_map(move |f| {
            let mut a = base(&["sample", "--sampler", "em", "--steps", "8", "-n", "2", "-q"]);
            push(&mut a, f);
            a
        }),
        3 => prop::collection::vec(flag("likelihood"), 0..5).prop_map(move |f| {
            let mut a = base(&[
                "likelihood", "--data", "u8.npy", "--model", "m.onnx", "-n", "2", "--trace",
                "hutchinson:1", "--rtol", "1e-2", "--atol", "1e-2", "-q",
            ]);
            push(&mut a, f);
            a
        }),
        2 => (
            pick(&["gbm", "ou", "lorenz", "vdp", "mvou", "lotka-volterra", "nope"]),
            prop::collection::vec(flag("solve"), 0..5)
        )
            .prop_map(move |(p, f)| {
                let mut a = base(&["solve"]);
                a.push(p);
                a.extend(base(&["--paths", "20", "--steps", "20", "-q"]));
                push(&mut a, f);
                a
            }),
        1 => prop::collection::vec(
            pick(&["s1.npy", "s2.npy", "f32.npy", "junk.npy", "missing.npy", "o.npy", "dir.npy"]),
            0..4
        )
        .prop_map(|shards| {
            let mut a = vec!["merge".to_string(), "merged.npy".to_string()];
            a.extend(shards);
            a
        }),
        1 => (pick(&["m.onnx", "junk.npy", "missing.onnx"]), prop::collection::vec(pick(SETS), 0..2))
            .prop_map(|(m, sets)| {
                let mut a = vec!["inspect".to_string(), m];
                for s in sets {
                    a.push("--set".into());
                    a.push(s);
                }
                a
            }),
    ]
}

fn push(args: &mut Vec<String>, flags: Vec<(String, Option<String>)>) {
    for (f, v) in flags {
        args.push(f);
        args.extend(v);
    }
}

/// The fixture files a command line may replace: the outputs it names (and their sidecars),
/// unless the command also reads them (the model and its derivative graph, the data, the
/// shards and their sidecars; a link counts as its target).
fn replaceable(args: &[String]) -> Vec<String> {
    let target = |f: &str| {
        if f == "link.npy" {
            "f32.npy".to_string()
        } else {
            f.to_string()
        }
    };
    let mut read = Vec::new();
    let mut written = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let next = args.get(i + 1).map(|s| target(s));
        match (a.as_str(), next) {
            ("--model", Some(m)) => {
                read.push(m.replace(".onnx", ".vjp.onnx"));
                read.push(m);
            }
            ("--data", Some(d)) => read.push(d),
            ("--out" | "--grid", Some(o)) => written.push(o),
            _ => {}
        }
    }
    match args[0].as_str() {
        "merge" => {
            written.push(target(&args[1]));
            for s in &args[2..] {
                read.push(format!("{}.meta.json", target(s)));
                read.push(target(s));
            }
        }
        "inspect" => read.push(target(&args[1])),
        "sample" | "likelihood" if !args.iter().any(|a| a == "--model") => {}
        _ => {}
    }
    let mut all: Vec<String> = written
        .iter()
        .flat_map(|o| [o.clone(), format!("{o}.meta.json")])
        .collect();
    all.retain(|o| !read.contains(o));
    all
}

#[test]
fn fuzz_command_lines_end_cleanly_and_leave_inputs_alone() {
    let files = Files::new();
    let before = files.inputs();
    let config = Config {
        cases: 500,
        rng_seed: RngSeed::Fixed(2024),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let succeeded = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&command_line(), |args| {
            let t = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_itoflow"))
                .env("ITOFLOW_CACHE", cache())
                .env_remove("SLURM_ARRAY_TASK_ID")
                .env_remove("JOB_COMPLETION_INDEX")
                .current_dir(files.dir.path())
                .args(&args)
                .timeout(BUDGET)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            prop_assert!(t.elapsed() < BUDGET, "{:?} ran past {:?}", args, BUDGET);
            let code = out.status.code();
            prop_assert!(
                matches!(code, Some(0..=2)),
                "{:?}: status {:?}: {}",
                args,
                out.status,
                err
            );
            prop_assert!(
                !err.contains("internal error") && !err.contains("panicked"),
                "{:?}: {}",
                args,
                err
            );
            if code == Some(0) {
                succeeded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note: ")).collect();
                prop_assert_eq!(lines.len(), 1, "{:?}: {}", args, err);
            }
            let after = files.inputs();
            let allowed = replaceable(&args);
            let changed: Vec<&String> = before
                .keys()
                .filter(|k| after.get(*k) != before.get(*k))
                .collect();
            // Restore them, so that one failure does not carry over to the next case.
            for k in &changed {
                std::fs::write(files.dir.path().join(k), &before[*k]).unwrap();
            }
            let wrong: Vec<&&String> = changed.iter().filter(|k| !allowed.contains(**k)).collect();
            prop_assert!(wrong.is_empty(), "{:?} changed {:?}", args, wrong);
            // Outputs of this case do not carry over to the next.
            for n in [
                "o.npy",
                "o.json",
                "o.csv",
                "o.png",
                "merged.npy",
                "g.png",
                "samples.npy",
                "likelihood.npy",
            ] {
                let p = files.dir.path().join(n);
                let _ = std::fs::remove_file(&p);
                let _ = std::fs::remove_file(format!("{}.meta.json", p.display()));
                let _ = std::fs::remove_file(format!("{}.progress.json", p.display()));
                let _ = std::fs::remove_dir_all(format!("{}.parts", p.display()));
            }
            Ok(())
        })
        .unwrap();
    let succeeded = succeeded.into_inner();
    eprintln!(
        "500 command lines in {:.1} s, {succeeded} succeeded",
        started.elapsed().as_secs_f64()
    );
    // Both outcomes are exercised.
    assert!(
        (25..475).contains(&succeeded),
        "{succeeded} of 500 succeeded"
    );
}
