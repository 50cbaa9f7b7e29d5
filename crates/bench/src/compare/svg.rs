//! Line charts as standalone SVG, written by hand: a few hundred bytes of markup per chart is
//! all the comparison needs (axes, grid, one line per series, a legend), and a reader's
//! browser or the repository's web view shows them as they are.

use std::fmt::Write as _;

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// A CSS color.
    pub color: String,
    /// Drawn dashed (for example a p99 beside a solid p50).
    pub dashed: bool,
    /// Points as (index into the x labels, value); non-positive values are skipped on a log
    /// scale.
    pub points: Vec<(usize, f64)>,
}

/// A chart with categorical x values (client counts) and a linear or logarithmic y axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// The title above the plot.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// The x positions' labels, evenly spaced.
    pub x_ticks: Vec<String>,
    /// A logarithmic y axis (base 10).
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// Colors for series, in order.
pub const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about `target` grid lines over `[0, max]`.
fn nice_step(max: f64, target: f64) -> f64 {
    let raw = max / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn label(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", trim(value / 1e6))
    } else if value >= 1e3 {
        format!("{}k", trim(value / 1e3))
    } else {
        trim(value)
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// Renders `chart` as an SVG document.
#[must_use]
pub fn render(chart: &Chart) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let values: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite() && (!chart.log_y || *v > 0.0))
        .collect();
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);

    // The y range and its grid lines.
    let (y_lo, y_hi, grid): (f64, f64, Vec<f64>) = if chart.log_y {
        let lo = if min.is_finite() && min > 0.0 {
            10f64.powf(min.log10().floor())
        } else {
            1.0
        };
        let hi = if max > 0.0 {
            10f64.powf(max.log10().ceil()).max(lo * 10.0)
        } else {
            lo * 10.0
        };
        let mut grid = Vec::new();
        let mut line = lo;
        while line <= hi * 1.0001 {
            grid.push(line);
            line *= 10.0;
        }
        (lo, hi, grid)
    } else {
        let top = if max > 0.0 { max * 1.1 } else { 1.0 };
        let step = nice_step(top, 5.0);
        let hi = (top / step).ceil() * step;
        let grid = (0..=((hi / step).round() as usize))
            .map(|i| i as f64 * step)
            .collect();
        (0.0, hi, grid)
    };
    let y_of = |value: f64| -> f64 {
        let fraction = if chart.log_y {
            (value.log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10())
        } else {
            (value - y_lo) / (y_hi - y_lo)
        };
        TOP + plot_h * (1.0 - fraction)
    };
    let ticks = chart.x_ticks.len().max(1);
    let x_of = |index: usize| -> f64 {
        if ticks == 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * 0.05 + plot_w * 0.9 * index as f64 / (ticks - 1) as f64
        }
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(&chart.title)
    );
    for line in &grid {
        let y = y_of(*line);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            label(*line)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    for (index, tick) in chart.x_ticks.iter().enumerate() {
        let x = x_of(index);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/>"##,
            TOP + plot_h,
            TOP + plot_h + 5.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 20.0,
            escape(tick)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(&chart.y_label)
    );
    for (number, series) in chart.series.iter().enumerate() {
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|(_, v)| v.is_finite() && (!chart.log_y || *v > 0.0))
            .map(|(i, v)| (x_of(*i), y_of(*v)))
            .collect();
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let color = escape(&series.color);
        if points.len() > 1 {
            let path: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
        }
        for (x, y) in &points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"/>"#
            );
        }
        let legend_y = TOP + 10.0 + 20.0 * number as f64;
        let legend_x = LEFT + plot_w + 15.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{color}" stroke-width="2"{dash}/>"#,
            legend_x + 24.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            legend_x + 30.0,
            legend_y + 4.0,
            escape(&series.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(log_y: bool) -> Chart {
        Chart {
            title: "writes <3 nodes>".into(),
            x_label: "clients".into(),
            y_label: "ops/s".into(),
            x_ticks: vec!["1".into(), "16".into(), "64".into(), "256".into()],
            log_y,
            series: vec![
                Series {
                    name: "chorus".into(),
                    color: PALETTE[0].into(),
                    dashed: false,
                    points: vec![(0, 900.0), (1, 9000.0), (2, 20000.0), (3, 30000.0)],
                },
                Series {
                    name: "etcd".into(),
                    color: PALETTE[1].into(),
                    dashed: true,
                    points: vec![(0, 300.0), (1, 0.0), (3, 4000.0)],
                },
            ],
        }
    }

    #[test]
    fn a_chart_is_one_svg_document_with_a_line_per_series() {
        for log_y in [false, true] {
            let svg = render(&chart(log_y));
            assert!(svg.starts_with("<svg"), "{svg}");
            assert!(svg.trim_end().ends_with("</svg>"));
            assert_eq!(svg.matches("<polyline").count(), 2);
            assert!(svg.contains("stroke-dasharray"));
            // Text is escaped.
            assert!(svg.contains("writes &lt;3 nodes&gt;"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn a_log_scale_skips_zeros() {
        let svg = render(&chart(true));
        // etcd has two positive points on the log scale, chorus four.
        assert_eq!(svg.matches("<circle").count(), 6);
        let linear = render(&chart(false));
        assert_eq!(linear.matches("<circle").count(), 7);
    }

    #[test]
    fn an_empty_chart_still_renders() {
        let svg = render(&Chart {
            series: vec![],
            ..chart(true)
        });
        assert!(svg.contains("</svg>"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(label(0.0), "0");
        assert_eq!(label(2500.0), "2.5k");
        assert_eq!(label(1_000_000.0), "1M");
        assert!((nice_step(1234.0, 5.0) - 500.0).abs() < 1e-9);
    }
}
