use crate::ReportError;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Pixel size of every plot.
const SIZE: (u32, u32) = (900, 560);
/// The family name plotters looks fonts up by.
const FAMILY: &str = "sans-serif";
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font compiled into the binary; if registration failed
        // anyway, plotting reports a font error instead of panicking.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// One named line of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points in x order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from its name and points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// One configuration in an accuracy-vs-speed chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Label drawn beside the point (e.g. "int8 / ort").
    pub label: String,
    /// Throughput.
    pub rows_per_second: f64,
    /// Accuracy (or another quality score in 0..1).
    pub accuracy: f64,
}

/// A chart kiln can draw.
#[derive(Debug, Clone, PartialEq)]
pub enum Plot {
    /// Loss (left panel) and accuracy (right panel) per epoch; x is the epoch.
    TrainingCurves {
        /// Loss series, e.g. train and val.
        loss: Vec<Series>,
        /// Accuracy series; the right panel is left out when empty (regression).
        accuracy: Vec<Series>,
    },
    /// A confusion matrix: `matrix[true][predicted]` counts.
    Confusion {
        /// Title above the matrix.
        title: String,
        /// Class labels, indexing both axes.
        classes: Vec<String>,
        /// Counts.
        matrix: Vec<Vec<u64>>,
    },
    /// A latency histogram: `(from_us, to_us, count)` bars.
    LatencyHistogram {
        /// Title above the histogram.
        title: String,
        /// Bars in ascending order.
        buckets: Vec<(u64, u64, u64)>,
    },
    /// Accuracy against throughput for candidate configurations.
    AccuracyVsSpeed {
        /// Title above the chart.
        title: String,
        /// The candidates.
        candidates: Vec<Candidate>,
    },
}

impl Plot {
    fn name(&self) -> &'static str {
        match self {
            Plot::TrainingCurves { .. } => "training curves",
            Plot::Confusion { .. } => "confusion matrix",
            Plot::LatencyHistogram { .. } => "latency histogram",
            Plot::AccuracyVsSpeed { .. } => "accuracy vs speed",
        }
    }

    fn check(&self) -> Result<(), ReportError> {
        let bad = |reason: &str| {
            Err(ReportError::Data {
                plot: self.name(),
                reason: reason.into(),
            })
        };
        let finite = |s: &[Series]| {
            s.iter()
                .all(|s| s.points.iter().all(|(x, y)| x.is_finite() && y.is_finite()))
        };
        match self {
            Plot::TrainingCurves { loss, accuracy } => {
                if loss.iter().all(|s| s.points.is_empty()) {
                    return bad("no loss values");
                }
                if !finite(loss) || !finite(accuracy) {
                    return bad(
                        "a loss or accuracy value is NaN or infinite (did training diverge?)",
                    );
                }
            }
            Plot::Confusion {
                classes, matrix, ..
            } => {
                if classes.is_empty() {
                    return bad("no classes");
                }
                if matrix.len() != classes.len() || matrix.iter().any(|r| r.len() != classes.len())
                {
                    return bad("the matrix is not classes × classes");
                }
            }
            Plot::LatencyHistogram { buckets, .. } => {
                if buckets.is_empty() {
                    return bad("no latency samples");
                }
            }
            Plot::AccuracyVsSpeed { candidates, .. } => {
                if candidates.is_empty() {
                    return bad("no candidates");
                }
                if candidates
                    .iter()
                    .any(|c| !c.accuracy.is_finite() || !c.rows_per_second.is_finite())
                {
                    return bad("a candidate has a NaN or infinite value");
                }
            }
        }
        Ok(())
    }
}

/// The two files of a written plot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlotFiles {
    /// The SVG.
    pub svg: PathBuf,
    /// The PNG.
    pub png: PathBuf,
}

/// Draws `plot` as `<dir>/<stem>.svg` and `<dir>/<stem>.png`, each written atomically.
pub fn write_plot(plot: &Plot, dir: &Path, stem: &str) -> Result<PlotFiles, ReportError> {
    let svg = render_svg(plot)?;
    let png_bytes = render_png(plot)?;
    let files = PlotFiles {
        svg: dir.join(format!("{stem}.svg")),
        png: dir.join(format!("{stem}.png")),
    };
    kiln_core::fsutil::write_atomic(&files.svg, svg.as_bytes())?;
    kiln_core::fsutil::write_atomic(&files.png, &png_bytes)?;
    Ok(files)
}

/// Draws `plot` as an SVG document.
pub fn render_svg(plot: &Plot) -> Result<String, ReportError> {
    plot.check()?;
    register_font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(plot, &root)?;
        root.present().map_err(|e| draw_err(plot, e))?;
    }
    Ok(out)
}

/// Draws `plot` as a PNG file's bytes.
pub fn render_png(plot: &Plot) -> Result<Vec<u8>, ReportError> {
    plot.check()?;
    register_font();
    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        draw(plot, &root)?;
        root.present().map_err(|e| draw_err(plot, e))?;
    }
    let mut png = Vec::new();
    let encode_err = |e: png::EncodingError| ReportError::Encode {
        path: PathBuf::from(format!("{}.png", plot.name())),
        reason: e.to_string(),
    };
    {
        let mut enc = png::Encoder::new(&mut png, SIZE.0, SIZE.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(encode_err)?;
        w.write_image_data(&rgb).map_err(encode_err)?;
    }
    Ok(png)
}

fn draw_err(plot: &Plot, e: impl std::fmt::Display) -> ReportError {
    ReportError::Draw {
        plot: plot.name(),
        reason: e.to_string(),
    }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn draw<DB: DrawingBackend>(plot: &Plot, root: &DrawingArea<DB, Shift>) -> Result<(), ReportError> {
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| draw_err(plot, err);
    root.fill(&WHITE).map_err(e)?;
    match plot {
        Plot::TrainingCurves { loss, accuracy } => {
            if accuracy.iter().all(|s| s.points.is_empty()) {
                line_panel(root, "loss per epoch", "loss", loss, false).map_err(e)?;
            } else {
                let (left, right) = root.split_horizontally(SIZE.0 / 2);
                line_panel(&left, "loss per epoch", "loss", loss, false).map_err(e)?;
                line_panel(&right, "accuracy per epoch", "accuracy", accuracy, true).map_err(e)?;
            }
        }
        Plot::Confusion {
            title,
            classes,
            matrix,
        } => confusion(root, title, classes, matrix).map_err(e)?,
        Plot::LatencyHistogram { title, buckets } => histogram(root, title, buckets).map_err(e)?,
        Plot::AccuracyVsSpeed { title, candidates } => {
            scatter(root, title, candidates).map_err(e)?
        }
    }
    Ok(())
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if (hi - lo).abs() < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    }
}

fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
    unit_range: bool,
) -> DrawResult<DB> {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (x0, x1) = padded(x0, x1);
    let (y0, y1) = if unit_range {
        (0.0, 1.02)
    } else {
        padded(y0.min(0.0), y1)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style((FAMILY, 13))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()?;
    Ok(())
}

fn confusion<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    classes: &[String],
    matrix: &[Vec<u64>],
) -> DrawResult<DB> {
    let k = classes.len() as i32;
    let max = matrix.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(110)
        // Integer ranges are inclusive in plotters: 0..k-1 gives k segments.
        .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())?;
    // Row 0 (the first true class) is drawn at the top.
    let name = |v: &SegmentValue<i32>, flip: bool| -> String {
        let i = match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => *i,
            SegmentValue::Last => return String::new(),
        };
        let i = if flip { k - 1 - i } else { i };
        usize::try_from(i)
            .ok()
            .and_then(|i| classes.get(i))
            .map(|c| c.chars().take(14).collect())
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(classes.len())
        .y_labels(classes.len())
        .x_label_formatter(&|v| name(v, false))
        .y_label_formatter(&|v| name(v, true))
        .x_desc("predicted")
        .y_desc("true")
        .label_style((FAMILY, 13))
        .draw()?;
    for (t, row) in matrix.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            let (x, y) = (p as i32, k - 1 - t as i32);
            let shade = count as f64 / max;
            let fill = RGBColor(
                (255.0 - 224.0 * shade) as u8,
                (255.0 - 136.0 * shade) as u8,
                (255.0 - 75.0 * shade) as u8,
            );
            chart.draw_series(std::iter::once(Rectangle::new(
                [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ],
                fill.filled(),
            )))?;
            let text_color = if shade > 0.55 { WHITE } else { BLACK };
            chart.draw_series(std::iter::once(Text::new(
                count.to_string(),
                (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                (FAMILY, 16)
                    .into_font()
                    .color(&text_color)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            )))?;
        }
    }
    Ok(())
}

fn histogram<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    buckets: &[(u64, u64, u64)],
) -> DrawResult<DB> {
    let x0 = buckets.first().map_or(0, |b| b.0) as f64;
    let x1 = buckets.last().map_or(1, |b| b.1) as f64;
    let y1 = buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64 * 1.08;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), 0.0..y1)?;
    chart
        .configure_mesh()
        .x_desc("latency per call (µs)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("calls")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FAMILY, 13))
        .draw()?;
    chart.draw_series(buckets.iter().map(|&(from, to, count)| {
        Rectangle::new(
            [(from as f64, 0.0), (to as f64, count as f64)],
            PALETTE[0].mix(0.8).filled(),
        )
    }))?;
    Ok(())
}

fn scatter<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    candidates: &[Candidate],
) -> DrawResult<DB> {
    let xs = candidates.iter().map(|c| c.rows_per_second);
    let (x0, x1) = padded(
        xs.clone().fold(f64::MAX, f64::min).min(0.0),
        xs.fold(f64::MIN, f64::max) * 1.25,
    );
    let ys = candidates.iter().map(|c| c.accuracy);
    let (y0, y1) = padded(
        ys.clone().fold(f64::MAX, f64::min),
        ys.fold(f64::MIN, f64::max),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0.max(0.0)..x1, y0..y1.min(1.05))?;
    chart
        .configure_mesh()
        .x_desc("rows per second")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("accuracy")
        .label_style((FAMILY, 13))
        .draw()?;
    for (i, c) in candidates.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let p = (c.rows_per_second, c.accuracy);
        // The label sits beside its point, in pixels, so it never covers the point.
        chart.draw_series(std::iter::once(
            EmptyElement::at(p)
                + Circle::new((0, 0), 6, color.filled())
                + Text::new(
                    c.label.clone(),
                    (10, -7),
                    (FAMILY, 14).into_font().color(&color),
                ),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all_plots() -> Vec<Plot> {
        vec![
            Plot::TrainingCurves {
                loss: vec![
                    Series::new("train", vec![(1.0, 1.0), (2.0, 0.6)]),
                    Series::new("val", vec![(1.0, 1.1), (2.0, 0.7)]),
                ],
                accuracy: vec![],
            },
            Plot::Confusion {
                title: "test".into(),
                classes: vec!["a".into(), "b".into()],
                matrix: vec![vec![5, 1], vec![0, 4]],
            },
            Plot::LatencyHistogram {
                title: "batch 1".into(),
                buckets: vec![(10, 12, 3), (12, 14, 9), (14, 16, 1)],
            },
            Plot::AccuracyVsSpeed {
                title: "candidates".into(),
                candidates: vec![
                    Candidate {
                        label: "f32".into(),
                        rows_per_second: 1e5,
                        accuracy: 0.95,
                    },
                    Candidate {
                        label: "int8".into(),
                        rows_per_second: 2e5,
                        accuracy: 0.95,
                    },
                ],
            },
        ]
    }

    #[test]
    fn every_plot_renders_to_svg_and_png() {
        for plot in all_plots() {
            let svg = render_svg(&plot).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{}",
                plot.name()
            );
            let png = render_png(&plot).unwrap();
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
            // A decodable image of the right size that is not blank.
            let dec = png::Decoder::new(std::io::Cursor::new(&png));
            let mut reader = dec.read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size()];
            let info = reader.next_frame(&mut buf).unwrap();
            assert_eq!((info.width, info.height), SIZE);
            assert!(buf.iter().any(|&b| b != 255), "{} is blank", plot.name());
        }
    }

    #[test]
    fn text_is_laid_out_in_the_svg() {
        let svg = render_svg(&all_plots()[1]).unwrap();
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| t.split('>').nth(1))
            .map(|t| t.trim_end_matches("</text").trim())
            .collect();
        for want in ["predicted", "true", "a", "b", "5", "4"] {
            assert!(texts.contains(&want), "{want} missing from {texts:?}");
        }
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        let bad = [
            Plot::TrainingCurves {
                loss: vec![],
                accuracy: vec![],
            },
            Plot::TrainingCurves {
                loss: vec![Series::new("train", vec![(1.0, f64::NAN)])],
                accuracy: vec![],
            },
            Plot::Confusion {
                title: "x".into(),
                classes: vec!["a".into()],
                matrix: vec![vec![1, 2]],
            },
            Plot::LatencyHistogram {
                title: "x".into(),
                buckets: vec![],
            },
        ];
        for p in bad {
            let err = render_svg(&p).unwrap_err().to_string();
            assert!(err.starts_with("cannot plot"), "{err}");
        }
    }

    #[test]
    fn a_single_point_still_draws() {
        let p = Plot::TrainingCurves {
            loss: vec![Series::new("train", vec![(1.0, 0.5)])],
            accuracy: vec![Series::new("train", vec![(1.0, 1.0)])],
        };
        render_png(&p).unwrap();
    }
}
