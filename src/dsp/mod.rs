//! Signal processing shared by the daemon and the training crate: filtering, resampling,
//! lead mapping, windowing, normalisation, signal quality and beat measurements.
//!
//! There is exactly one implementation of preprocessing; the model bundle's manifest records
//! which settings a model was trained with.

pub mod beats;
