//! Lead mapping: from the leads a device delivers to the lead order a model expects.
//!
//! Leads the device measures are copied; the limb leads III, aVR, aVL and aVF (and I or II
//! from the other two of I, II, III) are derived by Einthoven's and Goldberger's relations;
//! anything else (e.g. the chest leads of a single-lead strap) is filled with zeros and marked
//! [`LeadStatus::Missing`] in the [`LeadMask`], so the model and the quality check know.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::ecg::{Lead, LeadSet, Recording};

/// Where a lead of the target order comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    /// Measured by the device.
    Measured,
    /// Computed from measured limb leads.
    Derived,
    /// Neither measured nor derivable: zeros, masked.
    Missing,
}

/// Per-lead availability in the target order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadMask {
    /// The target lead order.
    pub leads: LeadSet,
    /// Status of each lead, in `leads` order.
    pub status: Vec<LeadStatus>,
}

impl LeadMask {
    /// True when row `i` holds a measured or derived signal.
    pub fn is_available(&self, i: usize) -> bool {
        self.status
            .get(i)
            .is_some_and(|s| *s != LeadStatus::Missing)
    }

    /// Availability of every row, in order.
    pub fn available(&self) -> Vec<bool> {
        (0..self.status.len())
            .map(|i| self.is_available(i))
            .collect()
    }

    /// The leads that are missing.
    pub fn missing(&self) -> Vec<Lead> {
        self.leads
            .0
            .iter()
            .zip(&self.status)
            .filter(|(_, s)| **s == LeadStatus::Missing)
            .map(|(l, _)| *l)
            .collect()
    }
}

/// A recording whose leads differ from the ones the mapper was built for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recording has leads {got:?}, the lead mapper was built for {expected:?}")]
pub struct LeadSetMismatch {
    /// The device lead set the mapper expects.
    pub expected: LeadSet,
    /// The recording's lead set.
    pub got: LeadSet,
}

/// A weighted sum of device channels.
type Combination = Vec<(usize, f32)>;

/// Maps recordings from one device lead set to one target order.
#[derive(Debug, Clone)]
pub struct LeadMapper {
    device: LeadSet,
    mask: LeadMask,
    plan: Vec<Combination>,
}

impl LeadMapper {
    /// Plans the mapping from `device` channels to the `target` order.
    pub fn new(device: &LeadSet, target: &LeadSet) -> Self {
        let channel = |lead| device.position(lead);
        let one = |i: usize| vec![(i, 1.0f32)];
        let lead_i = channel(Lead::I)
            .map(one)
            .or_else(|| Some(vec![(channel(Lead::II)?, 1.0), (channel(Lead::III)?, -1.0)]));
        let lead_ii = channel(Lead::II)
            .map(one)
            .or_else(|| Some(vec![(channel(Lead::I)?, 1.0), (channel(Lead::III)?, 1.0)]));
        let mut plan = Vec::with_capacity(target.len());
        let mut status = Vec::with_capacity(target.len());
        for &lead in &target.0 {
            let (combination, s) = if let Some(i) = channel(lead) {
                (one(i), LeadStatus::Measured)
            } else if let (Some(i), Some(ii), Some((wi, wii))) =
                (&lead_i, &lead_ii, limb_weights(lead))
            {
                (combine(i, wi, ii, wii), LeadStatus::Derived)
            } else {
                (Vec::new(), LeadStatus::Missing)
            };
            plan.push(combination);
            status.push(s);
        }
        LeadMapper {
            device: device.clone(),
            mask: LeadMask {
                leads: target.clone(),
                status,
            },
            plan,
        }
    }

    /// Which target leads are measured, derived or missing.
    pub fn mask(&self) -> &LeadMask {
        &self.mask
    }

    /// Device channels each target lead is computed from (empty when missing).
    pub fn sources(&self, target_index: usize) -> impl Iterator<Item = usize> + '_ {
        self.plan
            .get(target_index)
            .into_iter()
            .flatten()
            .map(|(i, _)| *i)
    }

    /// The recording in the target order; missing leads are zeros.
    pub fn map(&self, recording: &Recording) -> Result<Recording, LeadSetMismatch> {
        if recording.leads != self.device {
            return Err(LeadSetMismatch {
                expected: self.device.clone(),
                got: recording.leads.clone(),
            });
        }
        let n = recording.len();
        let mut out = Array2::<f32>::zeros((self.plan.len(), n));
        for (combination, mut row) in self.plan.iter().zip(out.rows_mut()) {
            for &(channel, weight) in combination {
                let source = recording.samples_uv.row(channel);
                row.zip_mut_with(&source, |o, &x| *o += weight * x);
            }
        }
        Ok(Recording {
            sample_rate_hz: recording.sample_rate_hz,
            leads: self.mask.leads.clone(),
            samples_uv: out,
        })
    }
}

/// Weights of I and II that give a limb lead (Einthoven and Goldberger).
fn limb_weights(lead: Lead) -> Option<(f32, f32)> {
    match lead {
        Lead::I => Some((1.0, 0.0)),
        Lead::II => Some((0.0, 1.0)),
        Lead::III => Some((-1.0, 1.0)),
        Lead::AVR => Some((-0.5, -0.5)),
        Lead::AVL => Some((1.0, -0.5)),
        Lead::AVF => Some((-0.5, 1.0)),
        _ => None,
    }
}

/// `wi * I + wii * II` as one weighted sum of channels (zero weights dropped).
fn combine(i: &Combination, wi: f32, ii: &Combination, wii: f32) -> Combination {
    let mut out: Combination = Vec::new();
    let scaled = i
        .iter()
        .map(|&(c, w)| (c, w * wi))
        .chain(ii.iter().map(|&(c, w)| (c, w * wii)));
    for (channel, weight) in scaled {
        match out.iter_mut().find(|(c, _)| *c == channel) {
            Some(entry) => entry.1 += weight,
            None => out.push((channel, weight)),
        }
    }
    out.retain(|&(_, w)| w != 0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Lead::*;

    fn recording(leads: &[Lead], rows: &[[f32; 3]]) -> Recording {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Recording {
            sample_rate_hz: 500.0,
            leads: LeadSet(leads.to_vec()),
            samples_uv: Array2::from_shape_vec((leads.len(), 3), flat).unwrap(),
        }
    }

    #[test]
    fn limb_leads_are_derived_from_i_and_ii() {
        let rec = recording(&[II, I], &[[200.0, 400.0, 0.0], [100.0, -100.0, 50.0]]);
        let mapper = LeadMapper::new(&rec.leads, &LeadSet::standard_12());
        let out = mapper.map(&rec).unwrap();
        let (i, ii) = ([100.0, -100.0, 50.0], [200.0, 400.0, 0.0]);
        for t in 0..3 {
            assert_eq!(out.lead(I).unwrap()[t], i[t]);
            assert_eq!(out.lead(II).unwrap()[t], ii[t]);
            assert_eq!(out.lead(III).unwrap()[t], ii[t] - i[t]);
            assert_eq!(out.lead(AVR).unwrap()[t], -(i[t] + ii[t]) / 2.0);
            assert_eq!(out.lead(AVL).unwrap()[t], i[t] - ii[t] / 2.0);
            assert_eq!(out.lead(AVF).unwrap()[t], ii[t] - i[t] / 2.0);
        }
        let mask = mapper.mask();
        assert_eq!(mask.status[0], LeadStatus::Measured);
        assert_eq!(mask.status[2], LeadStatus::Derived);
        assert_eq!(mask.missing(), vec![V1, V2, V3, V4, V5, V6]);
        assert!(out.lead(V1).unwrap().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn lead_ii_is_derived_from_i_and_iii() {
        let rec = recording(&[I, III], &[[100.0, 0.0, 10.0], [50.0, 50.0, 5.0]]);
        let mapper = LeadMapper::new(&rec.leads, &LeadSet(vec![II, AVF]));
        let out = mapper.map(&rec).unwrap();
        assert_eq!(out.lead(II).unwrap().to_vec(), vec![150.0, 50.0, 15.0]);
        assert_eq!(out.lead(AVF).unwrap().to_vec(), vec![100.0, 50.0, 10.0]);
        assert_eq!(mapper.sources(1).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn single_lead_strap_masks_everything_else() {
        let rec = recording(&[I], &[[1.0, 2.0, 3.0]]);
        let mapper = LeadMapper::new(&rec.leads, &LeadSet::standard_12());
        let available = mapper.mask().available();
        assert_eq!(available.iter().filter(|a| **a).count(), 1);
        assert!(available[0]);
    }

    #[test]
    fn reorders_mimic_order_to_standard_order() {
        let mimic = [I, II, III, AVR, AVF, AVL];
        let rows: Vec<[f32; 3]> = (0..6).map(|i| [i as f32; 3]).collect();
        let rec = recording(&mimic, &rows);
        let out = LeadMapper::new(&rec.leads, &LeadSet(Lead::STANDARD_12[..6].to_vec()))
            .map(&rec)
            .unwrap();
        assert_eq!(out.lead(AVL).unwrap()[0], 5.0);
        assert_eq!(out.lead(AVF).unwrap()[0], 4.0);
    }

    #[test]
    fn wrong_lead_set_is_an_error() {
        let mapper = LeadMapper::new(&LeadSet(vec![I]), &LeadSet::standard_12());
        let rec = recording(&[II], &[[0.0; 3]]);
        assert!(mapper.map(&rec).is_err());
    }
}
