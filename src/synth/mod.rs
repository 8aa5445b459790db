//! The physiological 12-lead ECG synthesizer: signals with ground-truth labels, measurements
//! and report text, used by the device simulator, the training data and the tests.
