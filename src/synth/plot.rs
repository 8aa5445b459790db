//! The standard 12-lead paper layout as a PNG: 3 x 4 leads of 2.5 s each plus a 10 s lead II
//! rhythm strip, 25 mm/s and 10 mm/mV on a 1 mm / 5 mm grid, with a 1 mV calibration pulse.
//!
//! Drawn with `plotters` (bitmap backend only); text uses a built-in 5 x 7 pixel font so no
//! font library is needed.

use std::path::Path;

use plotters::prelude::*;

use super::SynthError;
use crate::ecg::{Lead, Recording};

/// Pixels per millimetre of paper.
const PX_PER_MM: f64 = 5.0;
/// Paper speed, mm/s.
const MM_PER_S: f64 = 25.0;
/// Gain, mm/mV.
const MM_PER_MV: f64 = 10.0;
/// Height of one row of traces, mm.
const ROW_MM: f64 = 30.0;
/// Space left of the traces for the calibration pulse, mm.
const LEFT_MM: f64 = 10.0;
/// Space above the traces for the title, mm.
const TOP_MM: f64 = 12.0;
/// Seconds of signal on the page.
const PAGE_S: f64 = 10.0;

/// The 3 x 4 layout: rows of leads, each column showing the next 2.5 s.
const LAYOUT: [[Lead; 4]; 3] = [
    [Lead::I, Lead::AVR, Lead::V1, Lead::V4],
    [Lead::II, Lead::AVL, Lead::V2, Lead::V5],
    [Lead::III, Lead::AVF, Lead::V3, Lead::V6],
];

fn mm(v: f64) -> i32 {
    (v * PX_PER_MM).round() as i32
}

/// Renders the first 10 s of `recording` on ECG paper to a PNG at `path`, with `title` lines
/// at the top. Leads the recording lacks are left blank.
pub fn render_paper(
    recording: &Recording,
    title: &[String],
    path: &Path,
) -> Result<(), SynthError> {
    let err = |e: &dyn std::fmt::Display| SynthError::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let width_mm = LEFT_MM + PAGE_S * MM_PER_S + 5.0;
    let height_mm = TOP_MM + 4.0 * ROW_MM + 3.0;
    let (w, h) = (mm(width_mm) as u32, mm(height_mm) as u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;

    // Grid: 1 mm minor lines, 5 mm major lines.
    let minor = RGBColor(250, 218, 218);
    let major = RGBColor(236, 150, 150);
    let (grid_x0, grid_y0) = (0.0, TOP_MM - 2.0);
    for i in 0..=((width_mm - grid_x0) as i32) {
        let x = mm(grid_x0 + f64::from(i));
        let color = if i % 5 == 0 { major } else { minor };
        root.draw(&PathElement::new(
            vec![(x, mm(grid_y0)), (x, h as i32)],
            color,
        ))
        .map_err(|e| err(&e))?;
    }
    for i in 0..=((height_mm - grid_y0) as i32) {
        let y = mm(grid_y0 + f64::from(i));
        let color = if i % 5 == 0 { major } else { minor };
        root.draw(&PathElement::new(vec![(0, y), (w as i32, y)], color))
            .map_err(|e| err(&e))?;
    }

    let fs = recording.sample_rate_hz;
    let trace_style = ShapeStyle::from(&BLACK).stroke_width(2);
    let draw_segment = |lead: Lead, row: usize, t0: f64, t1: f64| -> Result<(), SynthError> {
        let baseline_mm = TOP_MM + ROW_MM * (row as f64 + 0.5);
        let x0_mm = LEFT_MM + t0 * MM_PER_S;
        draw_text(
            &root,
            lead.name(),
            mm(x0_mm) + 4,
            mm(baseline_mm - ROW_MM * 0.45),
            2,
        )?;
        let Some(index) = recording.leads.position(lead) else {
            return Ok(());
        };
        let row_data = recording.samples_uv.row(index);
        let (s0, s1) = ((t0 * fs) as usize, ((t1 * fs) as usize).min(row_data.len()));
        let points: Vec<(i32, i32)> = (s0..s1)
            .filter_map(|s| {
                let v = *row_data.get(s)?;
                let v = if v.is_finite() { f64::from(v) } else { 0.0 };
                let x = LEFT_MM + (s as f64 / fs) * MM_PER_S;
                let y = baseline_mm - (v / 1000.0 * MM_PER_MV).clamp(-ROW_MM, ROW_MM);
                Some((mm(x), mm(y)))
            })
            .collect();
        root.draw(&PathElement::new(points, trace_style))
            .map_err(|e| err(&e))?;
        Ok(())
    };
    for (row, leads) in LAYOUT.iter().enumerate() {
        for (col, &lead) in leads.iter().enumerate() {
            let t0 = col as f64 * PAGE_S / 4.0;
            draw_segment(lead, row, t0, t0 + PAGE_S / 4.0)?;
        }
    }
    draw_segment(Lead::II, 3, 0.0, PAGE_S)?;

    // Calibration pulses (1 mV, 0.2 s) and column separators.
    for row in 0..4 {
        let b = TOP_MM + ROW_MM * (row as f64 + 0.5);
        let x = 2.0;
        let pulse = vec![
            (mm(x), mm(b)),
            (mm(x + 1.0), mm(b)),
            (mm(x + 1.0), mm(b - MM_PER_MV)),
            (mm(x + 6.0), mm(b - MM_PER_MV)),
            (mm(x + 6.0), mm(b)),
            (mm(x + 7.0), mm(b)),
        ];
        root.draw(&PathElement::new(pulse, trace_style))
            .map_err(|e| err(&e))?;
        if row < 3 {
            for col in 1..4 {
                let x = LEFT_MM + col as f64 * PAGE_S / 4.0 * MM_PER_S;
                root.draw(&PathElement::new(
                    vec![(mm(x), mm(b - 4.0)), (mm(x), mm(b + 4.0))],
                    trace_style,
                ))
                .map_err(|e| err(&e))?;
            }
        }
    }
    for (i, line) in title.iter().take(2).enumerate() {
        draw_text(&root, line, mm(2.0), mm(1.0) + i as i32 * 22, 2)?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Draws `text` with the built-in font, top-left at (x, y), each font pixel `scale` pixels.
pub fn draw_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    x: i32,
    y: i32,
    scale: i32,
) -> Result<(), SynthError> {
    let mut cx = x;
    for ch in text.chars() {
        let rows = glyph(ch);
        for (r, bits) in rows.iter().enumerate() {
            for c in 0..5 {
                if bits & (0x10 >> c) != 0 {
                    let px = cx + c * scale;
                    let py = y + r as i32 * scale;
                    area.draw(&Rectangle::new(
                        [(px, py), (px + scale - 1, py + scale - 1)],
                        BLACK.filled(),
                    ))
                    .map_err(|e| SynthError::Plot {
                        path: std::path::PathBuf::new(),
                        reason: e.to_string(),
                    })?;
                }
            }
        }
        cx += 6 * scale;
    }
    Ok(())
}

/// The 5 x 7 bitmap of a character (rows top to bottom, bit 4 = leftmost pixel). Letters
/// without a lower-case glyph are drawn in upper case; unknown characters are blank.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [30, 17, 17, 17, 17, 17, 30],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'm' => [0, 0, 26, 21, 21, 17, 17],
        's' => [0, 0, 14, 16, 14, 1, 30],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        c if c.is_ascii_lowercase() => glyph(c.to_ascii_uppercase()),
        _ => [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lead_name_has_visible_glyphs() {
        for lead in Lead::STANDARD_12 {
            for c in lead.name().chars() {
                assert!(glyph(c).iter().any(|&r| r != 0), "no glyph for {c}");
            }
        }
    }
}
