//! Per-sample conditioning: class labels and conditioning tensors (embeddings), what a model
//! accepts ([`CondSpec`]) and what one batch carries ([`Cond`]).
//!
//! Every row of a batch carries its own conditioning; a model treats rows independently, so
//! sample `i` is conditioned on its own label whatever batch it is drawn in. A model trained
//! with label dropout (Ho & Salimans 2022) also has a *null label*, which makes it the
//! unconditional model; classifier-free guidance needs it ([`crate::guidance`]).

use std::ops::Range;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, s};

use crate::{DiffusionError, ScoreError};

/// What conditioning a score model accepts (ONNX metadata `itoflow.cond.*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CondSpec {
    /// Number of classes `K` of the class-label input (labels `0..K`), if the model has one.
    pub num_classes: Option<usize>,
    /// The label meaning "unconditional" (label dropout), if the model was trained with one.
    pub null_label: Option<i64>,
    /// Per-sample shape of the conditioning tensor, if the model has one.
    pub embedding_shape: Option<Vec<usize>>,
    /// The flattened null conditioning tensor (the unconditional input), if defined.
    pub embedding_null: Option<Vec<f32>>,
}

impl CondSpec {
    /// An unconditional model.
    pub const NONE: CondSpec = CondSpec {
        num_classes: None,
        null_label: None,
        embedding_shape: None,
        embedding_null: None,
    };

    /// A class-conditional model with `num_classes` labels and an optional null label.
    pub fn classes(num_classes: usize, null_label: Option<i64>) -> Self {
        CondSpec {
            num_classes: Some(num_classes),
            null_label,
            ..CondSpec::NONE
        }
    }

    /// Whether the model takes any conditioning input.
    pub fn is_conditional(&self) -> bool {
        self.num_classes.is_some() || self.embedding_shape.is_some()
    }

    /// Flattened length of the conditioning tensor (0 without one).
    pub fn embedding_len(&self) -> usize {
        self.embedding_shape
            .as_ref()
            .map_or(0, |s| s.iter().product())
    }

    /// Whether an unconditional evaluation is possible (every conditioning input has a null
    /// value, or there is none).
    pub fn has_null(&self) -> bool {
        (self.num_classes.is_none() || self.null_label.is_some())
            && (self.embedding_shape.is_none() || self.embedding_null.is_some())
    }

    /// Checks that `label` is a class (not the null label) of this model.
    pub fn check_class(&self, label: i64) -> Result<(), String> {
        match self.num_classes {
            None => Err("the model takes no class labels".to_string()),
            Some(k) if label >= 0 && (label as u64) < k as u64 => Ok(()),
            Some(k) => Err(format!("label {label} is not a class 0..{}", k - 1)),
        }
    }

    /// Checks that `label` is a class or the null label.
    pub fn check_label(&self, label: i64) -> Result<(), String> {
        if Some(label) == self.null_label {
            return Ok(());
        }
        self.check_class(label).map_err(|e| match self.null_label {
            Some(n) if self.num_classes.is_some() => format!("{e} (null label {n})"),
            _ => e,
        })
    }

    /// Checks the conditioning of a batch of `rows` rows against this spec.
    pub fn check(&self, cond: &Cond<'_>, rows: usize) -> Result<(), ScoreError> {
        match (&cond.labels, self.num_classes) {
            (Some(_), None) => {
                return Err(ScoreError::Condition {
                    row: 0,
                    reason: "the model takes no class labels".into(),
                });
            }
            (Some(l), Some(_)) => {
                if l.len() != rows {
                    return Err(ScoreError::shape("labels", [rows], l.shape()));
                }
                for (r, &y) in l.iter().enumerate() {
                    self.check_label(y)
                        .map_err(|reason| ScoreError::Condition { row: r, reason })?;
                }
            }
            (None, Some(k)) if self.null_label.is_none() => {
                return Err(ScoreError::Condition {
                    row: 0,
                    reason: format!(
                        "the model needs a class label (0..{}) per sample and has no null label",
                        k - 1
                    ),
                });
            }
            (None, _) => {}
        }
        match (&cond.embedding, &self.embedding_shape) {
            (Some(_), None) => Err(ScoreError::Condition {
                row: 0,
                reason: "the model takes no conditioning tensor".into(),
            }),
            (Some(e), Some(shape)) => {
                let k = self.embedding_len();
                if e.dim() != (rows, k) {
                    return Err(ScoreError::shape(
                        format!("conditioning tensor (per sample {shape:?})"),
                        [rows, k],
                        e.shape(),
                    ));
                }
                if let Some((r, _)) = e
                    .outer_iter()
                    .enumerate()
                    .find(|(_, row)| row.iter().any(|v| !v.is_finite()))
                {
                    return Err(ScoreError::Condition {
                        row: r,
                        reason: "the conditioning tensor is not finite".into(),
                    });
                }
                Ok(())
            }
            (None, Some(shape)) if self.embedding_null.is_none() => Err(ScoreError::Condition {
                row: 0,
                reason: format!(
                    "the model needs a conditioning tensor of shape {shape:?} per sample and has no null value"
                ),
            }),
            (None, _) => Ok(()),
        }
    }
}

/// The conditioning of one batch: row `r` is conditioned on `labels[r]` and `embedding[r]`.
/// `None` means the model's null value (the unconditional model).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cond<'a> {
    /// One class label per row.
    pub labels: Option<ArrayView1<'a, i64>>,
    /// One flattened conditioning tensor per row, `[rows, k]`.
    pub embedding: Option<ArrayView2<'a, f32>>,
}

impl<'a> Cond<'a> {
    /// No conditioning (the model's null values).
    pub const NONE: Cond<'static> = Cond {
        labels: None,
        embedding: None,
    };

    /// One class label per row.
    pub fn labels(labels: ArrayView1<'a, i64>) -> Self {
        Cond {
            labels: Some(labels),
            embedding: None,
        }
    }

    /// Whether nothing is given.
    pub fn is_none(&self) -> bool {
        self.labels.is_none() && self.embedding.is_none()
    }

    /// The conditioning of rows `range`.
    pub fn rows(&self, range: Range<usize>) -> Cond<'_> {
        Cond {
            labels: self.labels.as_ref().map(|l| l.slice(s![range.clone()])),
            embedding: self.embedding.as_ref().map(|e| e.slice(s![range, ..])),
        }
    }
}

/// Owned per-sample conditioning of a request: row `r` belongs to the request's `r`-th sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conditioning {
    /// Class label per sample.
    pub labels: Option<Array1<i64>>,
    /// Flattened conditioning tensor per sample, `[samples, k]`.
    pub embedding: Option<Array2<f32>>,
}

impl Conditioning {
    /// One label per sample.
    pub fn labels(labels: impl Into<Array1<i64>>) -> Self {
        Conditioning {
            labels: Some(labels.into()),
            embedding: None,
        }
    }

    /// One conditioning tensor per sample (`[samples, k]`, flattened).
    pub fn embedding(embedding: Array2<f32>) -> Self {
        Conditioning {
            labels: None,
            embedding: Some(embedding),
        }
    }

    /// Whether nothing is given.
    pub fn is_none(&self) -> bool {
        self.labels.is_none() && self.embedding.is_none()
    }

    /// A view of all rows.
    pub fn view(&self) -> Cond<'_> {
        Cond {
            labels: self.labels.as_ref().map(|l| l.view()),
            embedding: self.embedding.as_ref().map(|e| e.view()),
        }
    }

    /// The rows `index` (in that order), e.g. the active rows of an adaptive solve.
    pub fn select(&self, index: &[usize]) -> Conditioning {
        Conditioning {
            labels: self
                .labels
                .as_ref()
                .map(|l| index.iter().map(|&i| l[i]).collect()),
            embedding: self
                .embedding
                .as_ref()
                .map(|e| e.select(ndarray::Axis(0), index)),
        }
    }

    /// Checks the conditioning of `rows` samples against `spec`; errors name sample
    /// `first + row`.
    pub fn validate(&self, spec: &CondSpec, rows: usize, first: u64) -> Result<(), DiffusionError> {
        spec.check(&self.view(), rows)
            .map_err(|e| DiffusionError::from_score(e, first as usize, |_| f64::NAN))
    }
}

/// Work buffers for the conditioning of rows gathered from a batch (a row repeated once per
/// Jacobian-product direction, say): slot `c` takes row `r`'s label and tensor.
#[derive(Debug)]
pub(crate) struct Gathered {
    labels: Option<Array1<i64>>,
    embedding: Option<Array2<f32>>,
}

impl Gathered {
    /// Buffers for `cap` rows of `cond`'s kinds.
    pub fn new(cond: &Cond<'_>, cap: usize) -> Self {
        Gathered {
            labels: cond.labels.as_ref().map(|_| Array1::zeros(cap)),
            embedding: cond
                .embedding
                .as_ref()
                .map(|e| Array2::zeros((cap, e.ncols()))),
        }
    }

    /// Slot `c` ← row `r` of `cond`.
    pub fn set(&mut self, c: usize, cond: &Cond<'_>, r: usize) {
        if let (Some(l), Some(src)) = (self.labels.as_mut(), cond.labels.as_ref()) {
            l[c] = src[r];
        }
        if let (Some(e), Some(src)) = (self.embedding.as_mut(), cond.embedding.as_ref()) {
            e.row_mut(c).assign(&src.row(r));
        }
    }

    /// The first `len` slots.
    pub fn view(&self, len: usize) -> Cond<'_> {
        Cond {
            labels: self.labels.as_ref().map(|l| l.slice(s![..len])),
            embedding: self.embedding.as_ref().map(|e| e.slice(s![..len, ..])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn labels_are_checked_against_the_spec() {
        let spec = CondSpec::classes(10, Some(10));
        let ok = array![0_i64, 9, 10];
        assert!(spec.check(&Cond::labels(ok.view()), 3).is_ok());
        let bad = array![0_i64, 11];
        let e = spec.check(&Cond::labels(bad.view()), 2).unwrap_err();
        assert!(matches!(e, ScoreError::Condition { row: 1, .. }), "{e}");
        assert!(spec.check(&Cond::labels(ok.view()), 2).is_err());
        // No labels: the null label is used.
        assert!(spec.check(&Cond::NONE, 4).is_ok());
        let no_null = CondSpec::classes(10, None);
        assert!(no_null.check(&Cond::NONE, 4).is_err());
        assert!(!no_null.has_null());
        assert!(CondSpec::NONE.check(&Cond::labels(ok.view()), 3).is_err());
    }

    #[test]
    fn embeddings_are_checked_against_the_spec() {
        let spec = CondSpec {
            embedding_shape: Some(vec![2, 3]),
            embedding_null: Some(vec![0.0; 6]),
            ..CondSpec::NONE
        };
        let e = Array2::<f32>::zeros((4, 6));
        assert!(
            spec.check(
                &Cond {
                    labels: None,
                    embedding: Some(e.view())
                },
                4
            )
            .is_ok()
        );
        let wrong = Array2::<f32>::zeros((4, 5));
        assert!(
            spec.check(
                &Cond {
                    labels: None,
                    embedding: Some(wrong.view())
                },
                4
            )
            .is_err()
        );
        let mut nan = e.clone();
        nan[[2, 1]] = f32::NAN;
        let err = spec
            .check(
                &Cond {
                    labels: None,
                    embedding: Some(nan.view()),
                },
                4,
            )
            .unwrap_err();
        assert!(matches!(err, ScoreError::Condition { row: 2, .. }));
        assert!(spec.check(&Cond::NONE, 4).is_ok());
    }

    #[test]
    fn rows_and_select_keep_the_alignment() {
        let c = Conditioning::labels(vec![3_i64, 1, 4, 1, 5]);
        let v = c.view();
        let sub = v.rows(1..3);
        assert_eq!(sub.labels.unwrap().to_vec(), vec![1, 4]);
        assert_eq!(c.select(&[4, 0]).labels.unwrap().to_vec(), vec![5, 3]);
    }
}
