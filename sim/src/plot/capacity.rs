//! The capacity bar plot of `servesim capacity`: one bar per policy at the highest rate meeting
//! the target with every run stable, the rule under the title, and how many faster probes the
//! stability rule rejected over each bar.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::styles_for;
use super::ticks::{Ticked, format_tick};
use super::{PLOT_MAX_ABS, both, clamp_to, register_font};
use crate::error::Result;

/// One bar of the capacity plot.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityBar {
    pub policy: String,
    /// Highest rate meeting the SLO (requests/s; 0 when none does).
    pub rate_per_s: f64,
    /// Whether the search bracketed the capacity; an open bracket is labelled `< R` / `> R`.
    pub bracket: crate::capacity::Bracket,
    /// Probes that met the target but did not count because a run was unstable (shown under
    /// the bar's label when not 0).
    pub unstable_probes: usize,
}

// Long on purpose: one chart, drawn top to bottom (axes, bars, labels, the censoring note).
fn draw_capacity<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    setup: &str,
    bars: &[CapacityBar],
    names: &[String],
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    if bars.is_empty() {
        return Err("no policies".into());
    }
    // Bars beyond ±1e300 (a runaway search) are drawn to the top: an infinite axis end would
    // make plotters loop forever.
    let top = bars
        .iter()
        .map(|b| b.rate_per_s)
        .fold(0.0, f64::max)
        .clamp(1e-3, PLOT_MAX_ABS)
        * 1.3;
    let height = |b: &CapacityBar| clamp_to(b.rate_per_s, &(0.0..top));
    let below = draw_titles(root, title, setup)?;
    let censored = bars
        .iter()
        .any(|b| b.bracket != crate::capacity::Bracket::Closed);
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .margin_top(below + 8)
        .x_label_area_size(if censored { 62 } else { 45 })
        .y_label_area_size(70)
        .build_cartesian_2d(names.into_segmented(), Ticked::linear_auto(0.0..top))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("policy")
        .y_desc("capacity under the SLO (requests/s)")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(n) | SegmentValue::Exact(n) => n.to_string(),
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|v| format_tick(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    let last = names.len() - 1;
    let styles = styles_for(names);
    // A censored bar (the search never bracketed the capacity) is hollow: white inside, its
    // outline in the policy's colour.
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let right = if i == last {
                SegmentValue::Last
            } else {
                SegmentValue::Exact(&names[i + 1])
            };
            let col = styles[i].color;
            let style = if b.bracket == crate::capacity::Bracket::Closed {
                col.filled()
            } else {
                col.stroke_width(3)
            };
            let mut r = Rectangle::new(
                [(SegmentValue::Exact(&names[i]), 0.0), (right, height(b))],
                style,
            );
            r.set_margin(0, 0, 18, 18);
            r
        }))
        .map_err(|x| e(&x))?;
    if censored {
        let (w, h) = root.dim_in_pixel();
        let grey = ("sans-serif", 12)
            .into_font()
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        root.draw(&Text::new(
            "hollow bar: censored, the search never bracketed the capacity (at or beyond the probed rates)",
            (w as i32 / 2, h as i32 - 4),
            grey,
        ))
        .map_err(|x| e(&x))?;
    }
    let base = bars[0].rate_per_s;
    let style = ("sans-serif", 15)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    for (i, b) in bars.iter().enumerate() {
        let label = bar_label(b, base);
        // Pixel position above the bar (the root area's origin is the image's).
        let at = chart.backend_coord(&(SegmentValue::CenterOf(&names[i]), height(b)));
        root.draw(&Text::new(label, (at.0, at.1 - 6), style.clone()))
            .map_err(|x| e(&x))?;
        if b.unstable_probes > 0 {
            draw_unstable_note(root, at, b.unstable_probes)?;
        }
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// The title, the setup and, under them, the stability rule. Returns the height they take.
fn draw_titles<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    setup: &str,
) -> std::result::Result<i32, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let (w, _) = root.dim_in_pixel();
    let y = super::style::draw_title(root, title, setup)?;
    root.draw(&Text::new(
        "a rate counts only if every run is stable: achieved >= 0.95 x offered (work-weighted) and the queue does not grow over the last half",
        (w as i32 / 2, y),
        ("sans-serif", 12)
            .into_font()
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(|x| e(&x))?;
    Ok(y + 18)
}

/// The label over a bar: its rate and its ratio to the first bar's `base`, or what an open
/// bracket means.
fn bar_label(b: &CapacityBar, base: f64) -> String {
    if b.bracket == crate::capacity::Bracket::Below {
        "below every probed rate".to_string()
    } else if b.bracket == crate::capacity::Bracket::Above {
        format!("> {:.3} (bracket never closed)", b.rate_per_s)
    } else if base > 0.0 {
        format!("{:.3} ({:.2}x)", b.rate_per_s, b.rate_per_s / base)
    } else {
        format!("{:.3}", b.rate_per_s)
    }
}

/// How many faster probes met the target but were unstable, over the bar's label at pixel `at`:
/// two short lines, so that the note stays within its bar's slot.
fn draw_unstable_note<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    unstable_probes: usize,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let small = ("sans-serif", 12)
        .into_font()
        .color(&RGBColor(90, 90, 90))
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    let lines = [
        format!("{unstable_probes} faster probe(s)"),
        "met it, unstable".to_string(),
    ];
    for (k, line) in lines.into_iter().enumerate() {
        root.draw(&Text::new(
            line,
            (at.0, at.1 - 38 + 14 * k as i32),
            small.clone(),
        ))
        .map_err(|x| e(&x))?;
    }
    Ok(())
}

/// Write `capacity.png` / `capacity.svg` into `dir`: one bar per policy (in the given order) at
/// the highest rate meeting the SLO, labelled with the rate and its ratio to the first policy.
pub fn plot_capacity(dir: &Path, title: &str, bars: &[CapacityBar]) -> Result<Vec<PathBuf>> {
    plot_capacity_with_setup(dir, title, "", bars)
}

/// [`plot_capacity`] with `setup` (see [`super::scenario_setup`]) under the title.
pub fn plot_capacity_with_setup(
    dir: &Path,
    title: &str,
    setup: &str,
    bars: &[CapacityBar],
) -> Result<Vec<PathBuf>> {
    register_font();
    let names: Vec<String> = bars.iter().map(|b| b.policy.clone()).collect();
    both(
        dir,
        "capacity",
        &|a| draw_capacity(a, title, setup, bars, &names),
        &|a| draw_capacity(a, title, setup, bars, &names),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runaway capacity (1.7e308 · 1.2 overflowed the axis end to inf) used to make plotters
    /// loop forever; bars beyond the axis are drawn to its top.
    #[test]
    fn capacity_plot_with_huge_and_infinite_bars() {
        let dir = tempfile::tempdir().unwrap();
        let bars = [
            CapacityBar {
                policy: "a".into(),
                rate_per_s: 1.7e308,
                bracket: crate::capacity::Bracket::Closed,
                unstable_probes: 0,
            },
            CapacityBar {
                policy: "b".into(),
                rate_per_s: f64::INFINITY,
                bracket: crate::capacity::Bracket::Closed,
                unstable_probes: 0,
            },
            CapacityBar {
                policy: "c".into(),
                rate_per_s: f64::NAN,
                bracket: crate::capacity::Bracket::Closed,
                unstable_probes: 0,
            },
        ];
        let files = plot_capacity(dir.path(), "huge", &bars).unwrap();
        assert_eq!(files.len(), 2);
    }

    /// An open bracket draws a hollow bar and the note saying so; the setup line is under the
    /// title.
    #[test]
    fn censored_bars_are_noted() {
        let dir = tempfile::tempdir().unwrap();
        let bar = |policy: &str, bracket| CapacityBar {
            policy: policy.into(),
            rate_per_s: 1.5,
            bracket,
            unstable_probes: 0,
        };
        let bars = [
            bar("vllm", crate::capacity::Bracket::Closed),
            bar("alise", crate::capacity::Bracket::Above),
        ];
        plot_capacity_with_setup(dir.path(), "t", "opt-13b · 1 × a100-40gb", &bars).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("capacity.svg")).unwrap();
        assert!(svg.contains("hollow bar: censored"), "no censoring note");
        assert!(svg.contains("opt-13b · 1 × a100-40gb"), "no setup line");
        // vllm's and alise's fixed colours.
        assert!(svg.contains("#1F77B4") && svg.contains("#D62728"));
    }
}
