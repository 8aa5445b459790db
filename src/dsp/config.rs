//! The `[dsp]` table: the deployment's filters and windows, used when no model bundle's
//! manifest says otherwise (see `pipeline::model`).

use serde::Deserialize;

/// Signal processing and windowing settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DspConfig {
    /// High-pass corner in Hz: 0.05 (diagnostic) or 0.5 (monitoring).
    #[serde(default = "default_highpass")]
    pub highpass_hz: f64,
    /// Mains frequency to notch out: 50, 60, or 0 for none.
    #[serde(default = "default_notch")]
    pub notch_hz: f64,
    /// Also notch the mains harmonics below the low-pass corner.
    #[serde(default)]
    pub notch_harmonics: bool,
    /// Low-pass corner in Hz (40, 100 or 150).
    #[serde(default = "default_lowpass")]
    pub lowpass_hz: f64,
    /// Window length in seconds.
    #[serde(default = "default_window")]
    pub window_seconds: f64,
    /// Hop between window starts in seconds.
    #[serde(default = "default_window")]
    pub hop_seconds: f64,
    /// Order of the Butterworth high-pass and low-pass filters (2, 4, 6 or 8; each pair of
    /// orders is one second-order section).
    #[serde(default = "default_filter_order")]
    pub filter_order: usize,
    /// Filter forward and backward (no phase distortion, for diagnostic ST analysis). Costs a
    /// whole window of latency: a window is filtered only once it is complete.
    #[serde(default)]
    pub zero_phase: bool,
    /// Longest gap in the device stream, in seconds, that is bridged by linear interpolation
    /// (and flagged); a longer gap closes the window being filled.
    #[serde(default = "default_max_gap")]
    pub max_gap_seconds: f64,
}

fn default_highpass() -> f64 {
    0.5
}
fn default_notch() -> f64 {
    50.0
}
fn default_lowpass() -> f64 {
    40.0
}
fn default_window() -> f64 {
    10.0
}
fn default_filter_order() -> usize {
    2
}
fn default_max_gap() -> f64 {
    0.1
}

impl Default for DspConfig {
    fn default() -> Self {
        DspConfig {
            highpass_hz: default_highpass(),
            notch_hz: default_notch(),
            notch_harmonics: false,
            lowpass_hz: default_lowpass(),
            window_seconds: default_window(),
            hop_seconds: default_window(),
            filter_order: default_filter_order(),
            zero_phase: false,
            max_gap_seconds: default_max_gap(),
        }
    }
}
