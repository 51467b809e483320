//! How a series looks: a fixed colour and marker per policy (and router) name, the same in every
//! figure, with a deterministic fallback for other names; the markers; the legend drawn beside
//! the plot (so it never covers a point); and the two-line title (what, then the setup).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A marker shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Plus,
    Pentagon,
}

/// Colour, marker and marker radius (pixels) of one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesStyle {
    pub color: RGBColor,
    pub marker: Marker,
    pub size: i32,
}

use Marker::*;

/// The fixed styles: policies first, then routers. The sizes differ a little so that equal
/// points stay visible (see [`draw_order`]).
const KNOWN: [(&str, RGBColor, Marker, i32); 17] = [
    ("vllm", RGBColor(31, 119, 180), Circle, 5),
    ("skip-join-mlfq", RGBColor(255, 127, 14), Square, 4),
    ("srpt-oracle", RGBColor(44, 160, 44), TriangleUp, 5),
    ("alise", RGBColor(214, 39, 40), Diamond, 5),
    ("fcfs", RGBColor(148, 103, 189), TriangleDown, 5),
    ("mlfq", RGBColor(140, 86, 75), Cross, 5),
    ("sjf-oracle", RGBColor(227, 119, 194), Plus, 6),
    ("ltr", RGBColor(188, 189, 34), Pentagon, 5),
    ("fcfs-swap", RGBColor(23, 190, 207), Circle, 3),
    ("vllm-v1", RGBColor(127, 127, 127), Square, 3),
    ("sarathi", RGBColor(0, 70, 140), TriangleUp, 4),
    ("srpt", RGBColor(0, 110, 60), TriangleDown, 4),
    ("sjf", RGBColor(150, 20, 110), Diamond, 4),
    ("round-robin", RGBColor(31, 119, 180), Circle, 5),
    ("least-outstanding", RGBColor(255, 127, 14), Square, 4),
    ("least-kv", RGBColor(44, 160, 44), TriangleUp, 5),
    ("least-work", RGBColor(214, 39, 40), Diamond, 5),
];

/// Colours for other names, tried in this order.
const FALLBACK: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 70, 140),
    RGBColor(150, 20, 110),
];

const MARKERS: [Marker; 8] = [
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Plus,
    Pentagon,
];

/// The style of a known name, if it has one.
pub fn known_style(name: &str) -> Option<SeriesStyle> {
    KNOWN
        .iter()
        .find(|k| k.0 == name)
        .map(|&(_, color, marker, size)| SeriesStyle {
            color,
            marker,
            size,
        })
}

/// The style of each of `names` (a figure's series, in legend order): the fixed one for a
/// known name; for any other name, in order, the first fallback colour (and the next marker)
/// that no earlier series of `names` uses, so the result depends only on `names`.
pub fn styles_for(names: &[String]) -> Vec<SeriesStyle> {
    let mut out: Vec<Option<SeriesStyle>> = names.iter().map(|n| known_style(n)).collect();
    let mut taken: Vec<RGBColor> = names
        .iter()
        .filter_map(|n| known_style(n).map(|s| s.color))
        .collect();
    let mut next = 0usize;
    for (i, n) in names.iter().enumerate() {
        if known_style(n).is_some() {
            continue;
        }
        let color = FALLBACK
            .iter()
            .copied()
            .find(|c| !taken.contains(c))
            .unwrap_or(FALLBACK[next % FALLBACK.len()]);
        taken.push(color);
        out[i] = Some(SeriesStyle {
            color,
            marker: MARKERS[next % MARKERS.len()],
            size: 4 + (next % 2) as i32,
        });
        next += 1;
    }
    out.into_iter().flatten().collect()
}

/// The order to draw markers in so that none hides another: filled shapes largest first, then
/// the line-drawn ones (cross, plus) on top. Sort by this key, ascending.
pub fn draw_order(st: &SeriesStyle) -> (bool, std::cmp::Reverse<i32>) {
    (
        matches!(st.marker, Cross | Plus),
        std::cmp::Reverse(st.size),
    )
}

/// Draw `m` of radius `r` centred at pixel `at` onto `root` (whose origin is the image's):
/// filled in `col`, or hollow (white inside, a 2-pixel outline) when `hollow`.
pub fn draw_marker<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    st: &SeriesStyle,
    hollow: bool,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let (x, y, r) = (at.0, at.1, st.size);
    let col = st.color;
    let poly: Vec<(i32, i32)> = match st.marker {
        Circle => {
            if hollow {
                root.draw(&plotters::element::Circle::new(at, r, WHITE.filled()))
                    .map_err(|q| e(&q))?;
                root.draw(&plotters::element::Circle::new(at, r, col.stroke_width(2)))
                    .map_err(|q| e(&q))?;
            } else {
                root.draw(&plotters::element::Circle::new(at, r, col.filled()))
                    .map_err(|q| e(&q))?;
            }
            return Ok(());
        }
        Cross | Plus => {
            let d = if st.marker == Cross { r } else { r + 1 };
            let lines = if st.marker == Cross {
                [
                    [(x - d, y - d), (x + d, y + d)],
                    [(x - d, y + d), (x + d, y - d)],
                ]
            } else {
                [[(x - d, y), (x + d, y)], [(x, y - d), (x, y + d)]]
            };
            let w = if hollow { 1 } else { 3 };
            for l in lines {
                root.draw(&PathElement::new(l.to_vec(), col.stroke_width(w)))
                    .map_err(|q| e(&q))?;
            }
            return Ok(());
        }
        Square => vec![
            (x - r, y - r),
            (x + r, y - r),
            (x + r, y + r),
            (x - r, y + r),
        ],
        TriangleUp => vec![(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)],
        TriangleDown => vec![(x, y + r + 1), (x + r + 1, y - r), (x - r - 1, y - r)],
        Diamond => vec![
            (x, y - r - 1),
            (x + r + 1, y),
            (x, y + r + 1),
            (x - r - 1, y),
        ],
        Pentagon => (0..5)
            .map(|k| {
                let a = -std::f64::consts::FRAC_PI_2 + k as f64 * 2.0 * std::f64::consts::PI / 5.0;
                let rr = r as f64 + 1.0;
                (
                    x + (rr * a.cos()).round() as i32,
                    y + (rr * a.sin()).round() as i32,
                )
            })
            .collect(),
    };
    let fill = if hollow { WHITE.filled() } else { col.filled() };
    root.draw(&Polygon::new(poly.clone(), fill))
        .map_err(|q| e(&q))?;
    let mut outline = poly;
    outline.push(outline[0]);
    root.draw(&PathElement::new(
        outline,
        col.stroke_width(if hollow { 2 } else { 1 }),
    ))
    .map_err(|q| e(&q))?;
    Ok(())
}

/// One legend entry: a label, and how its sample is drawn.
pub struct LegendEntry {
    pub label: String,
    pub color: RGBColor,
    /// The marker drawn on the sample (none: a plain line).
    pub marker: Option<SeriesStyle>,
    pub hollow: bool,
    pub dashed: bool,
}

impl LegendEntry {
    /// The entry of a series: its line and filled marker.
    pub fn series(label: &str, st: SeriesStyle) -> Self {
        LegendEntry {
            label: label.to_string(),
            color: st.color,
            marker: Some(st),
            hollow: false,
            dashed: false,
        }
    }
}

const LEGEND_FONT: u32 = 14;
const LEGEND_ROW: i32 = 22;

/// The width (pixels) a legend of `entries` needs, at most `max`.
pub fn legend_width<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    max: u32,
) -> u32 {
    let font = TextStyle::from(("sans-serif", LEGEND_FONT).into_font());
    let text = entries
        .iter()
        .map(|e| root.estimate_text_size(&e.label, &font).map_or(0, |s| s.0))
        .max()
        .unwrap_or(0);
    (text + 52).min(max)
}

/// The legend: one row per entry from the top of `area` (beside the plot, so it covers no
/// point), labels cut with `…` when wider than the area.
pub fn draw_side_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    top: i32,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let font = TextStyle::from(("sans-serif", LEGEND_FONT).into_font());
    let (w, _) = area.dim_in_pixel();
    let room = w as i32 - 44;
    for (k, en) in entries.iter().enumerate() {
        let y = top + k as i32 * LEGEND_ROW;
        let line = vec![(6, y), (32, y)];
        if en.dashed {
            area.draw(&plotters::element::DashedPathElement::new(
                line,
                5,
                3,
                en.color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?;
        } else {
            area.draw(&PathElement::new(line, en.color.stroke_width(2)))
                .map_err(|x| e(&x))?;
        }
        if let Some(st) = en.marker {
            // Markers take pixel positions relative to the area: draw them on the area itself.
            draw_marker(area, (19, y), &st, en.hollow)?;
        }
        let label = fit_text(area, &en.label, &font, room.max(0) as u32);
        let style = font.clone().pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(label, (40, y), style))
            .map_err(|x| e(&x))?;
    }
    Ok(())
}

/// Draw `title` (20 px) and under it `setup` (12 px, grey; wrapped at ` · ` when too wide)
/// centred at the top of `root`. Returns the pixel height they take.
pub fn draw_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    setup: &str,
) -> std::result::Result<i32, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let (w, _) = root.dim_in_pixel();
    let centred = |size: u32, color: RGBColor| {
        ("sans-serif", size)
            .into_font()
            .color(&color)
            .pos(Pos::new(HPos::Center, VPos::Top))
    };
    let title_font = TextStyle::from(("sans-serif", 20).into_font());
    let title = fit_text(root, title, &title_font, w.saturating_sub(20));
    root.draw(&Text::new(title, (w as i32 / 2, 8), centred(20, BLACK)))
        .map_err(|x| e(&x))?;
    let mut y = 34;
    let font = TextStyle::from(("sans-serif", 13).into_font());
    for line in wrap(root, setup, &font, w.saturating_sub(40)) {
        let line = fit_text(root, &line, &font, w.saturating_sub(20));
        root.draw(&Text::new(
            line,
            (w as i32 / 2, y),
            centred(13, RGBColor(80, 80, 80)),
        ))
        .map_err(|x| e(&x))?;
        y += 17;
    }
    Ok(y + 4)
}

/// The most characters a drawn label keeps before it is measured: longer names are cut to this
/// many first, so that fitting never measures an arbitrarily long string.
const LABEL_MAX_CHARS: usize = 120;

/// `text` as drawn within `room` pixels in `font`: whole when it fits, else its longest prefix
/// that fits with `…` appended (at least one character and `…`). The number of measurements is
/// bounded (a binary search over at most [`LABEL_MAX_CHARS`] characters).
pub fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    font: &TextStyle,
    room: u32,
) -> String {
    let fits = |s: &str| area.estimate_text_size(s, font).is_ok_and(|d| d.0 <= room);
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= LABEL_MAX_CHARS && fits(text) {
        return text.to_string();
    }
    let cut = |k: usize| chars[..k].iter().collect::<String>() + "…";
    // The longest prefix length in 1..=hi whose cut fits (1 when none does).
    let (mut lo, mut hi) = (1, chars.len().min(LABEL_MAX_CHARS));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(&cut(mid)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    cut(lo.min(chars.len()))
}

/// `text` split into lines at ` · ` so that each fits `width` pixels in `font` (a part wider
/// than that gets a line of its own).
fn wrap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    text: &str,
    font: &TextStyle,
    width: u32,
) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    let fits = |s: &str| root.estimate_text_size(s, font).is_ok_and(|d| d.0 <= width);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for part in text.split(" · ") {
        let joined = if cur.is_empty() {
            part.to_string()
        } else {
            format!("{cur} · {part}")
        };
        if cur.is_empty() || fits(&joined) {
            cur = joined;
        } else {
            lines.push(std::mem::replace(&mut cur, part.to_string()));
        }
    }
    lines.push(cur);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_policy_looks_the_same_in_every_figure() {
        let a = styles_for(&names(&["vllm", "skip-join-mlfq", "alise"]));
        let b = styles_for(&names(&["alise", "fcfs", "vllm"]));
        assert_eq!(a[0], b[2]);
        assert_eq!(a[2], b[0]);
        assert_eq!(a[0], known_style("vllm").unwrap());
    }

    #[test]
    fn known_styles_are_distinct() {
        let policies: Vec<_> = KNOWN[..13].iter().map(|k| (k.1, k.2)).collect();
        for (i, p) in policies.iter().enumerate() {
            assert!(!policies[..i].contains(p), "{:?}", KNOWN[i].0);
            assert!(
                !policies[..i].iter().any(|q| q.0 == p.0),
                "colour of {}",
                KNOWN[i].0
            );
        }
    }

    #[test]
    fn unknown_names_get_distinct_deterministic_styles() {
        let n = names(&["vllm", "0.5", "1", "alise", "2"]);
        let a = styles_for(&n);
        assert_eq!(a, styles_for(&n));
        let colours: Vec<_> = a.iter().map(|s| s.color).collect();
        for (i, c) in colours.iter().enumerate() {
            assert!(!colours[..i].contains(c), "{colours:?}");
        }
        // Many unknown names never panic.
        let many: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        assert_eq!(styles_for(&many).len(), 40);
    }
}
