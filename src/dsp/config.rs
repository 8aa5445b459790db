//! The `[dsp]` table: the deployment's filters and windows, used when no model bundle's
//! manifest says otherwise (see `pipeline::model`), and the site's mains notch, which always
//! applies (the mains frequency belongs to the installation, not to the model).

use serde::Deserialize;

use super::PreprocessSpec;

/// Signal processing and windowing settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DspConfig {
    /// High-pass corner in Hz: 0.05 (diagnostic) or 0.5 (monitoring).
    #[serde(default = "default_highpass")]
    pub highpass_hz: f64,
    /// The site's mains frequency to notch out: 50, 60, or 0 for none. Applies with a model
    /// bundle too (it replaces the notch frequency of the bundle's manifest).
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

/// Window lengths allowed anywhere, in seconds.
pub const WINDOW_SECONDS_RANGE: std::ops::RangeInclusive<f64> = 1.0..=60.0;

/// The shortest hop allowed anywhere, in seconds: a shorter one rounds to no frame at low rates
/// (every block an error) or to one (a window per sample, flooding inference).
pub const MIN_HOP_SECONDS: f64 = 0.1;

/// One bed's window policy (`window_seconds`, `hop_seconds` of its `[[source]]` table): unset
/// values are the model's (the bundle's manifest, or `[dsp]` without one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BedWindow {
    /// Window length in seconds.
    pub window_seconds: Option<f64>,
    /// Hop between window starts in seconds.
    pub hop_seconds: Option<f64>,
}

impl BedWindow {
    /// What can be checked without the model: the first unusable field as (`field`, what is
    /// allowed).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(w) = self.window_seconds
            && !WINDOW_SECONDS_RANGE.contains(&w)
        {
            return Err(("window_seconds", format!("is {w}; allowed: 1 to 60 s")));
        }
        if let Some(h) = self.hop_seconds {
            let most = self.window_seconds.unwrap_or(*WINDOW_SECONDS_RANGE.end());
            if !(h >= MIN_HOP_SECONDS && h <= most) {
                return Err((
                    "hop_seconds",
                    format!("is {h}; allowed: {MIN_HOP_SECONDS} s to the window ({most} s)"),
                ));
            }
        }
        Ok(())
    }

    /// `spec` with this bed's window and hop; `encoder_window_seconds` is the window the
    /// model's encoder takes, when a model is loaded. The error names the field and what is
    /// allowed.
    pub fn apply(
        &self,
        spec: &PreprocessSpec,
        encoder_window_seconds: Option<f64>,
    ) -> Result<PreprocessSpec, (&'static str, String)> {
        self.check()?;
        let mut out = spec.clone();
        out.window_seconds = self.window_seconds.unwrap_or(spec.window_seconds);
        out.hop_seconds = self.hop_seconds.unwrap_or(spec.hop_seconds);
        if let (Some(w), Some(expected)) = (self.window_seconds, encoder_window_seconds)
            && (w - expected).abs() > 1e-9
        {
            return Err((
                "window_seconds",
                format!(
                    "is {w}; allowed: {expected} s, the window the model's encoder takes (leave it out to use the model's)"
                ),
            ));
        }
        if !(out.hop_seconds >= MIN_HOP_SECONDS && out.hop_seconds <= out.window_seconds) {
            return Err((
                "hop_seconds",
                format!(
                    "is {}; allowed: {MIN_HOP_SECONDS} s to the window ({} s)",
                    out.hop_seconds, out.window_seconds
                ),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> PreprocessSpec {
        PreprocessSpec {
            window_seconds: 10.0,
            hop_seconds: 10.0,
            ..PreprocessSpec::default()
        }
    }

    #[test]
    fn a_bed_window_defaults_to_the_models_and_may_hop_its_own_way() {
        let same = BedWindow::default().apply(&model(), Some(10.0)).unwrap();
        assert_eq!(same, model());
        let hop = BedWindow {
            window_seconds: None,
            hop_seconds: Some(2.5),
        }
        .apply(&model(), Some(10.0))
        .unwrap();
        assert_eq!((hop.window_seconds, hop.hop_seconds), (10.0, 2.5));
        // Without a model any window in range goes; its hop defaults to the model's.
        let free = BedWindow {
            window_seconds: Some(20.0),
            hop_seconds: None,
        }
        .apply(&model(), None)
        .unwrap();
        assert_eq!((free.window_seconds, free.hop_seconds), (20.0, 10.0));
    }

    #[test]
    fn a_bed_window_the_encoder_does_not_take_or_a_bad_hop_is_refused_naming_the_field() {
        let err = |w: Option<f64>, h: Option<f64>| {
            BedWindow {
                window_seconds: w,
                hop_seconds: h,
            }
            .apply(&model(), Some(10.0))
            .unwrap_err()
        };
        let (field, reason) = err(Some(5.0), None);
        assert_eq!(field, "window_seconds");
        assert!(reason.contains("is 5; allowed: 10 s"), "{reason}");
        for hop in [0.0, -1.0, f64::NAN, f64::INFINITY, 11.0] {
            assert_eq!(err(None, Some(hop)).0, "hop_seconds", "{hop}");
        }
        for window in [0.5, 61.0, f64::NAN] {
            assert_eq!(err(Some(window), None).0, "window_seconds", "{window}");
        }
    }
}
