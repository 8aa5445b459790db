//! Data-set trees. (stub)
use super::SynthError;
use std::path::Path;
/// Layout.
#[derive(Debug, Clone, Copy)]
pub enum DatasetStyle {
    /// a
    Ptbxl,
    /// b
    Mimic,
}
/// Spec.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    /// n
    pub n: usize,
    /// s
    pub style: DatasetStyle,
    /// s
    pub seed: u64,
    /// n
    pub max_noise: f32,
}
/// Summary.
pub struct DatasetSummary {
    /// r
    pub records: usize,
    /// d
    pub distinct_mixes: usize,
}
/// Write.
pub fn write_dataset(
    _out: &Path,
    _spec: &DatasetSpec,
    _progress: impl FnMut(usize),
) -> Result<DatasetSummary, SynthError> {
    todo!()
}
