//! Normalisation of a model input, exactly as the model bundle's manifest names it. The daemon
//! and the training crate both call [`Normalization::apply`].

use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// Ranges or deviations below this (microvolts) count as a constant signal.
const CONSTANT_EPSILON: f64 = 1e-6;

/// How samples are scaled before they reach the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Microvolts unchanged.
    None,
    /// MEIT's scaling: one minimum and maximum over all available leads of the record,
    /// mapped to [0, 1].
    #[default]
    MinMaxRecord,
    /// Each available lead to zero mean and unit standard deviation.
    ZScorePerLead,
    /// Microvolts / 1000: a fixed scale (PTB-XL's raw millivolts, as the paper feeds PTB-XL), so
    /// absolute voltage (hypertrophy, low voltage) stays visible to the model.
    Millivolts,
}

impl Normalization {
    /// Scales `samples` (`leads x samples`) in place. Rows where `available` is false (masked
    /// leads) take no part in the statistics and are set to 0; a constant signal becomes 0.
    pub fn apply(self, samples: &mut Array2<f32>, available: &[bool]) {
        let is_available = |i: usize| available.get(i).copied().unwrap_or(false);
        match self {
            Normalization::None => {}
            Normalization::Millivolts => {
                for (i, mut row) in samples.rows_mut().into_iter().enumerate() {
                    if is_available(i) {
                        row.mapv_inplace(|x| x / 1000.0);
                    } else {
                        row.fill(0.0);
                    }
                }
            }
            Normalization::MinMaxRecord => {
                let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
                for (_, row) in samples
                    .rows()
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| is_available(*i))
                {
                    for &x in row {
                        lo = lo.min(f64::from(x));
                        hi = hi.max(f64::from(x));
                    }
                }
                let range = hi - lo;
                for (i, mut row) in samples.rows_mut().into_iter().enumerate() {
                    if is_available(i) && range > CONSTANT_EPSILON {
                        row.mapv_inplace(|x| ((f64::from(x) - lo) / range) as f32);
                    } else {
                        row.fill(0.0);
                    }
                }
            }
            Normalization::ZScorePerLead => {
                for (i, mut row) in samples.rows_mut().into_iter().enumerate() {
                    let n = row.len() as f64;
                    if !is_available(i) || n == 0.0 {
                        row.fill(0.0);
                        continue;
                    }
                    let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
                    let var = row
                        .iter()
                        .map(|&x| (f64::from(x) - mean).powi(2))
                        .sum::<f64>()
                        / n;
                    let sd = var.sqrt();
                    if sd > CONSTANT_EPSILON {
                        row.mapv_inplace(|x| ((f64::from(x) - mean) / sd) as f32);
                    } else {
                        row.fill(0.0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_leads() -> Array2<f32> {
        Array2::from_shape_vec(
            (3, 4),
            vec![
                0.0, 100.0, 200.0, 300.0, -100.0, 0.0, 100.0, 500.0, 9e6, 9e6, 9e6, 9e6,
            ],
        )
        .unwrap()
    }

    #[test]
    fn min_max_spans_zero_to_one_over_available_leads_only() {
        let mut x = two_leads();
        Normalization::MinMaxRecord.apply(&mut x, &[true, true, false]);
        assert_eq!(x[[1, 0]], 0.0);
        assert_eq!(x[[1, 3]], 1.0);
        assert!((x[[0, 0]] - 100.0 / 600.0).abs() < 1e-6);
        assert!(x.row(2).iter().all(|&v| v == 0.0), "masked lead is zeroed");
    }

    #[test]
    fn z_score_gives_zero_mean_unit_deviation_per_lead() {
        let mut x = two_leads();
        Normalization::ZScorePerLead.apply(&mut x, &[true, true, true]);
        for i in 0..2 {
            let row = x.row(i);
            let mean: f32 = row.sum() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(
                mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
                "lead {i}: {mean} {var}"
            );
        }
        assert!(
            x.row(2).iter().all(|&v| v == 0.0),
            "constant lead becomes 0"
        );
    }

    #[test]
    fn none_leaves_samples_alone_and_names_round_trip() {
        let mut x = two_leads();
        Normalization::None.apply(&mut x, &[true, true, true]);
        assert_eq!(x, two_leads());
        let json = serde_json::to_string(&Normalization::MinMaxRecord).unwrap();
        assert_eq!(json, "\"min_max_record\"");
        assert_eq!(
            serde_json::from_str::<Normalization>(&json).unwrap(),
            Normalization::MinMaxRecord
        );
    }

    #[test]
    fn millivolts_keep_absolute_amplitude_and_zero_masked_rows() {
        let mut a = ndarray::array![[1500.0f32, -500.0], [3000.0, 1000.0], [7.0, 7.0]];
        Normalization::Millivolts.apply(&mut a, &[true, true, false]);
        assert_eq!(a, ndarray::array![[1.5f32, -0.5], [3.0, 1.0], [0.0, 0.0]]);
    }
}
