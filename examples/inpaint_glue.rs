//! The glue of inpainting by replacement alone: a sampling run with a trivial score (`−x`, so
//! that the run is the sampler's own work) with and without an inpainting constraint (top half of
//! the 64 entries known), Euler ancestral (Karras, 100 levels) and Euler–Maruyama (100 uniform
//! levels), batch 1, 64 and 256; best of repeated runs, per step. The difference is what the
//! replacement adds: drawing the known entries' fresh normals and writing them in.
//!
//! ```sh
//! cargo run --release --example inpaint_glue
//! ```

use itoflow::diffusion::constraint::Constraint;
use itoflow::diffusion::forward::{Forward, Vp};
use itoflow::diffusion::sampler::{SampleRequest, Sampler};
use itoflow::diffusion::schedule::Schedule;
use itoflow::diffusion::{Cond, ScoreError, ScoreModel};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2};
use std::time::Instant;

struct Trivial(Forward);
impl ScoreModel<f32> for Trivial {
    fn sde(&self) -> &Forward {
        &self.0
    }
    fn dim(&self) -> usize {
        64
    }
    fn score(
        &self,
        x: ArrayView2<'_, f32>,
        _t: ArrayView1<'_, f32>,
        _c: Cond<'_>,
        mut out: ArrayViewMut2<'_, f32>,
    ) -> Result<(), ScoreError> {
        out.zip_mut_with(&x, |o, &x| *o = -x);
        Ok(())
    }
}

fn main() {
    let m = Trivial(Forward::Vp(Vp::default()));
    for b in [1usize, 64, 256] {
        let data = Array2::<f64>::from_elem((b, 64), 0.3);
        let mut mask = Array2::<f64>::zeros((1, 64));
        mask.slice_mut(ndarray::s![.., ..32]).fill(1.0);
        let inpaint = Constraint::inpaint(data, mask);
        for name in ["euler-ancestral", "em"] {
            let s = Sampler::from_name(name).unwrap();
            let sched = if name == "em" {
                Schedule::uniform(100)
            } else {
                Schedule::karras(100)
            };
            let mut best = [f64::INFINITY; 2];
            for _ in 0..(2000 / b.max(8)).max(5) {
                for (k, c) in [None, Some(&inpaint)].into_iter().enumerate() {
                    let mut r = SampleRequest::new(&m, s)
                        .schedule(sched.clone())
                        .indices(0..b as u64);
                    if let Some(c) = c {
                        r = r.constraint(c);
                    }
                    let t = Instant::now();
                    r.run::<f32>().unwrap();
                    best[k] = best[k].min(t.elapsed().as_secs_f64());
                }
            }
            println!(
                "b {b:3} {name:16} plain {:8.2} us/step, inpaint {:8.2} us/step, extra {:6.2} us/step",
                best[0] * 1e4,
                best[1] * 1e4,
                (best[1] - best[0]) * 1e4
            );
        }
    }
}
