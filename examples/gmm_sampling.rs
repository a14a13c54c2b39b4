//! Samples a 2-D Gaussian mixture with several samplers and writes, per sampler, a PNG of the
//! samples (dots) over the exact data density (grey levels), plus the sample mean and
//! covariance next to the exact ones.
//!
//! ```sh
//! cargo run --release --example gmm_sampling [OUT_DIR]   # default: out/gmm_sampling
//! ```

use std::path::PathBuf;

use image::{Rgb, RgbImage};
use itoflow::diffusion::forward::{Forward, Vp};
use itoflow::diffusion::sampler::{Corrector, SampleRequest, Sampler};
use itoflow::diffusion::schedule::Schedule;
use itoflow::diffusion::{DiffusionError, GaussianMixture};
use ndarray::{Array2, Axis, array};

const SIZE: u32 = 512;
const HALF_WIDTH: f64 = 4.0;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or("out/gmm_sampling".into()));
    std::fs::create_dir_all(&out)?;
    let sde = Forward::Vp(Vp::default());
    let gmm = ring_mixture(sde.clone())?;
    let n = 2000;
    println!("exact mean {:.3}", gmm.mean_at(0.0));
    // In 2-D the per-sample Langevin norm rule is biased (see `langevin_step`); use the
    // annealed rule here.
    let pc = Sampler::Pc {
        snr: 0.16,
        corrector_steps: 1,
        corrector: Corrector::Annealed,
        denoise: true,
    };
    for (kind, schedule) in [
        (pc, Some(Schedule::uniform(500))),
        (Sampler::from_name("em")?, Some(Schedule::uniform(1000))),
        (Sampler::from_name("ode")?, None),
        (
            Sampler::from_name("dpmpp-2m")?,
            Some(Schedule::exponential(20)),
        ),
        (Sampler::from_name("heun")?, Some(Schedule::karras(18))),
        (
            Sampler::from_name("dpmpp-3m-sde")?,
            Some(Schedule::karras(30)),
        ),
    ] {
        let start = std::time::Instant::now();
        let mut req = SampleRequest::new(&gmm, kind).seed(1).indices(0..n as u64);
        if let Some(s) = schedule {
            req = req.schedule(s);
        }
        let samples = req.run::<f64>()?;
        let (x, report) = (samples.x, samples.report);
        let secs = start.elapsed().as_secs_f64();
        let mean = x.mean_axis(Axis(0)).unwrap_or_default();
        let c = &x - &mean;
        let cov = c.t().dot(&c) / (n as f64 - 1.0);
        println!(
            "{kind:>18}: NFE {:4}, {:6.1} ms, mean [{:+.3}, {:+.3}], cov [[{:.3}, {:.3}], [{:.3}, {:.3}]]",
            report.nfe,
            secs * 1e3,
            mean[0],
            mean[1],
            cov[[0, 0]],
            cov[[0, 1]],
            cov[[1, 0]],
            cov[[1, 1]]
        );
        let path = out.join(format!("{kind}.png"));
        plot(&gmm, &x)?.save(&path)?;
    }
    let c = gmm.covariance_at(0.0);
    println!(
        "exact covariance [[{:.3}, {:.3}], [{:.3}, {:.3}]]; images in {}",
        c[[0, 0]],
        c[[0, 1]],
        c[[1, 0]],
        c[[1, 1]],
        out.display()
    );
    Ok(())
}

/// Eight anisotropic Gaussians on a ring of radius 2.5.
fn ring_mixture(sde: Forward) -> Result<GaussianMixture, DiffusionError> {
    let k = 8;
    let mut means = Vec::new();
    let mut covs = Vec::new();
    for i in 0..k {
        let a = 2.0 * std::f64::consts::PI * i as f64 / k as f64;
        let (c, s) = (a.cos(), a.sin());
        means.push(array![2.5 * c, 2.5 * s]);
        // Long axis tangent to the ring.
        let r = array![[c, -s], [s, c]];
        let d = array![[0.02, 0.0], [0.0, 0.12]];
        covs.push(r.dot(&d).dot(&r.t()));
    }
    GaussianMixture::new(vec![1.0; k], means, covs, sde)
}

fn to_pixel(v: f64) -> i64 {
    ((v + HALF_WIDTH) / (2.0 * HALF_WIDTH) * SIZE as f64).floor() as i64
}

fn plot(gmm: &GaussianMixture, x: &Array2<f64>) -> Result<RgbImage, DiffusionError> {
    let mut img = RgbImage::new(SIZE, SIZE);
    let mut dens = vec![0.0; (SIZE * SIZE) as usize];
    let mut max: f64 = 0.0;
    for py in 0..SIZE {
        for px in 0..SIZE {
            let u = (px as f64 + 0.5) / SIZE as f64 * 2.0 * HALF_WIDTH - HALF_WIDTH;
            let v = HALF_WIDTH - (py as f64 + 0.5) / SIZE as f64 * 2.0 * HALF_WIDTH;
            let p = gmm.log_density(array![u, v].view(), 0.0).exp();
            dens[(py * SIZE + px) as usize] = p;
            max = max.max(p);
        }
    }
    for (i, p) in dens.iter().enumerate() {
        let g = 255 - (200.0 * (p / max).sqrt()) as u8;
        img.put_pixel(i as u32 % SIZE, i as u32 / SIZE, Rgb([g, g, g]));
    }
    for row in x.outer_iter() {
        let (px, py) = (to_pixel(row[0]), to_pixel(-row[1]));
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let (a, b) = (px + dx, py + dy);
            if (0..SIZE as i64).contains(&a) && (0..SIZE as i64).contains(&b) {
                img.put_pixel(a as u32, b as u32, Rgb([200, 30, 30]));
            }
        }
    }
    Ok(img)
}
