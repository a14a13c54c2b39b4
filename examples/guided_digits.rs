//! Guided sampling of the shipped class-conditional digits model, scored by its clean
//! evaluation classifier: per-class accuracy (the share of the samples drawn for class c that
//! `models/digits/eval_classifier.onnx` reads as c) under classifier-free guidance
//! w ∈ {0, 1, 2, 4} and classifier guidance λ ∈ {1, 2, 4}, printed as a markdown table
//! (models/digits/MODEL_CARD.md). Needs ONNX Runtime (`bash scripts/setup-venv.sh`).
//!
//! ```sh
//! cargo run --release --example guided_digits                      # euler-ancestral, Karras 25
//! cargo run --release --example guided_digits -- em 1000           # score_sde's EM, 1000 levels
//! cargo run --release --example guided_digits -- SAMPLER [STEPS [PER_CLASS [SEED]]]
//! ```
//!
//! Conventions (`itoflow_diffusion::guidance`, score `s = −ε/σ`):
//!
//! * classifier-free: `ε̂ = ε_u + w (ε_c − ε_u)`, `ε_u` the null label's, so w = 0 is the
//!   unconditional model and w = 1 the conditional one; one model call of 2B rows per step;
//! * classifier, unconditional: `s(x, t) + λ ∇ₓ log p_t(y | x)` with `s` the null label's score
//!   (λ = 1: `∇ₓ log p_t(x | y)` by Bayes' rule; the torch reference in the model card);
//! * classifier, conditional: `s(x, t | y) + λ ∇ₓ log p_t(y | x)` (Dhariwal & Nichol guide a
//!   conditional model; what `itoflow sample --class Y --classifier C` does with this model).
//!
//! Samples `100c … 100c + 99` (per class 100 by default) are drawn for class `c`, with the same
//! seed for every setting, so the settings share their prior draws and step noise. Besides the
//! accuracy: NN, the mean Euclidean distance in raw units (0..16, clipped) to the nearest training
//! digit, and the share of pixels outside `[−1 − 1/17, 1 + 1/17]` before clipping, both as in
//! the model card's torch table.

use std::path::Path;
use std::time::Instant;

use itoflow::diffusion::forward::Forward;
use itoflow::diffusion::guidance::Guidance;
use itoflow::diffusion::onnx::{OnnxClassifier, OnnxEvalClassifier, OnnxOptions, OnnxScoreModel};
use itoflow::diffusion::sampler::{SampleRequest, Sampler};
use itoflow::diffusion::{Cond, CondSpec, Conditioning, ScoreError, ScoreModel};
use ndarray::{Array1, Array2, Array4, ArrayView1, ArrayView2, ArrayViewMut2};
use ndarray_npy::read_npy;

/// The conditional model seen as unconditional: every row gets the null label.
struct NullLabel<'a>(&'a OnnxScoreModel);

impl ScoreModel<f32> for NullLabel<'_> {
    fn sde(&self) -> &Forward {
        ScoreModel::<f32>::sde(self.0)
    }
    fn dim(&self) -> usize {
        ScoreModel::<f32>::dim(self.0)
    }
    fn conditioning(&self) -> &CondSpec {
        &CondSpec::NONE
    }
    fn score(
        &self,
        x: ArrayView2<'_, f32>,
        t: ArrayView1<'_, f32>,
        _cond: Cond<'_>,
        out: ArrayViewMut2<'_, f32>,
    ) -> Result<(), ScoreError> {
        // Without labels the ONNX backend feeds the model's null label.
        self.0.score(x, t, Cond::NONE, out)
    }
    fn max_batch(&self) -> Option<usize> {
        ScoreModel::<f32>::max_batch(self.0)
    }
}

enum Setting {
    Cfg(f64),
    ClassifierUncond(f64),
    ClassifierCond(f64),
}

impl Setting {
    fn name(&self) -> String {
        match self {
            Setting::Cfg(w) if *w == 0.0 => "w = 0 (unconditional)".into(),
            Setting::Cfg(w) if *w == 1.0 => "w = 1 (conditional)".into(),
            Setting::Cfg(w) => format!("w = {w}"),
            Setting::ClassifierUncond(l) => format!("classifier λ = {l}, null label"),
            Setting::ClassifierCond(l) => format!("classifier λ = {l}, with the label"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sampler = Sampler::from_name(args.first().map_or("euler-ancestral", String::as_str))?;
    let per_class: usize = args.get(2).map_or(Ok(100), |s| s.parse())?;
    let seed: u64 = args.get(3).map_or(Ok(5), |s| s.parse())?;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits");
    let opts = OnnxOptions::default();
    let model = OnnxScoreModel::open(dir.join("digits.onnx"), &opts)?;
    let noisy = OnnxClassifier::open(dir.join("digits_classifier.onnx"), &opts)?;
    let eval = OnnxEvalClassifier::open(dir.join("eval_classifier.onnx"), &opts)?;
    let train: Array4<u8> = read_npy(dir.join("train_digits.npy"))?;
    let n_train = train.shape()[0];
    let train = train.into_shape_with_order((n_train, 64))?.mapv(f64::from);

    let sde = ScoreModel::<f32>::sde(&model);
    let schedule = sampler
        .default_schedule(sde)
        .ok_or("the example needs a fixed-step sampler")?;
    let schedule = match args.get(1) {
        Some(s) => schedule.with_steps(s.parse()?),
        None => schedule,
    };
    let k = eval.num_classes();
    let n = k * per_class;
    let labels = Conditioning::labels(Array1::from_iter((0..n).map(|i| (i / per_class) as i64)));

    println!(
        "{} samples ({per_class} per class), sampler {}, schedule {} with {} levels, seed {seed}",
        n,
        sampler.name(),
        schedule.name(),
        schedule.steps()
    );
    println!();
    print!("| guidance | mean acc. |");
    for c in 0..k {
        print!(" {c} |");
    }
    println!(" NN | out of range | model calls | rows / sample |");
    print!("|---|---:|");
    for _ in 0..k {
        print!("---:|");
    }
    println!("---:|---:|---:|---:|");

    let settings = [
        Setting::Cfg(0.0),
        Setting::Cfg(1.0),
        Setting::Cfg(2.0),
        Setting::Cfg(4.0),
        Setting::ClassifierUncond(1.0),
        Setting::ClassifierUncond(2.0),
        Setting::ClassifierUncond(4.0),
        Setting::ClassifierCond(1.0),
        Setting::ClassifierCond(2.0),
        Setting::ClassifierCond(4.0),
    ];
    let null = NullLabel(&model);
    for setting in &settings {
        let start = Instant::now();
        let out = match *setting {
            Setting::Cfg(w) => SampleRequest::new(&model, sampler)
                .guidance(Guidance::ClassifierFree {
                    scale: w,
                    interval: None,
                })
                .schedule(schedule.clone())
                .conditioning(&labels)
                .seed(seed)
                .indices(0..n as u64)
                .run::<f32>()?,
            Setting::ClassifierUncond(l) => SampleRequest::new(&null, sampler)
                .guidance(Guidance::Classifier {
                    classifier: &noisy,
                    scale: l,
                })
                .schedule(schedule.clone())
                .conditioning(&labels)
                .seed(seed)
                .indices(0..n as u64)
                .run::<f32>()?,
            Setting::ClassifierCond(l) => SampleRequest::new(&model, sampler)
                .guidance(Guidance::Classifier {
                    classifier: &noisy,
                    scale: l,
                })
                .schedule(schedule.clone())
                .conditioning(&labels)
                .seed(seed)
                .indices(0..n as u64)
                .run::<f32>()?,
        };
        let x = out.x.mapv(f64::from);
        let pred = eval.predict(x.view())?;
        let acc: Vec<f64> = (0..k)
            .map(|c| {
                let hit = (c * per_class..(c + 1) * per_class)
                    .filter(|&i| pred[i] == c)
                    .count();
                hit as f64 / per_class as f64
            })
            .collect();
        let mean = acc.iter().sum::<f64>() / k as f64;
        let bound = 1.0 + 1.0 / 17.0;
        let outside = x.iter().filter(|v| v.abs() > bound).count() as f64 / x.len() as f64;
        print!("| {} | {mean:.3} |", setting.name());
        for a in &acc {
            print!(" {a:.2} |");
        }
        println!(
            " {:.1} | {:.1} % | {} | {:.0} |",
            mean_nn(&x, &train),
            100.0 * outside,
            out.report.model_calls,
            out.report.row_evals as f64 / n as f64
        );
        eprintln!("{}: {:.1} s", setting.name(), start.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Mean Euclidean distance (raw units r = 17 (y + 1)/2 − ½ clipped to [0, 16]) from each sample
/// to its nearest training digit.
fn mean_nn(x: &Array2<f64>, train: &Array2<f64>) -> f64 {
    let raw = x.mapv(|y| (17.0 * (y + 1.0) / 2.0 - 0.5).clamp(0.0, 16.0));
    let total: f64 = raw
        .outer_iter()
        .map(|r| {
            train
                .outer_iter()
                .map(|t| r.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum::<f64>())
                .fold(f64::INFINITY, f64::min)
                .sqrt()
        })
        .sum();
    total / x.nrows() as f64
}
