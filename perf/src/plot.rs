//! Plots as SVG and PNG (plotters): latency-by-percentile curves (HdrHistogram style) and
//! grouped bars. Text needs a TrueType font from the system (Debian: fonts-dejavu-core).

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

type Res = Result<(), Box<dyn std::error::Error>>;

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system font once; `Err` says how to get one.
fn font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = FONT_PATHS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or("no TrueType font found (apt-get install fonts-dejavu-core)")?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
            .map_err(|_| "the system font could not be parsed".to_string())
    })
    .clone()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x44, 0x44, 0x44),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
];

/// x position of a percentile: the number of nines, so 90 -> 1, 99 -> 2, 99.9 -> 3.
fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).log10()
}

fn both(
    stem: &Path,
    draw: impl Fn(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Res + Copy,
    png: impl Fn(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Res,
) -> Res {
    if let Err(why) = font() {
        println!("plots skipped: {why}");
        return Ok(());
    }
    let svg = stem.with_extension("svg");
    let png_path = stem.with_extension("png");
    {
        let root = SVGBackend::new(&svg, (900, 540)).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    {
        let root = BitMapBackend::new(&png_path, (900, 540)).into_drawing_area();
        png(&root)?;
        root.present()?;
    }
    println!("plots: {} {}", svg.display(), png_path.display());
    Ok(())
}

/// One line per series: latency (µs, log scale) against percentile.
pub fn percentile_curves(stem: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> Res {
    fn draw<B: DrawingBackend>(
        root: &DrawingArea<B, plotters::coord::Shift>,
        title: &str,
        series: &[(String, Vec<(f64, f64)>)],
    ) -> Res
    where
        B::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let ymax = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(1.0f64, f64::max)
            * 1.5;
        let ymin = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(f64::MAX, f64::min)
            .max(0.1)
            / 1.5;
        let xmax = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| nines(p.0)))
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..xmax, (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .x_labels(6)
            .x_label_formatter(&|x| format!("{}", ((1.0 - 10f64.powf(-x)) * 100.0 * 1000.0).round() / 1000.0))
            .draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|&(p, v)| (nines(p), v)),
                    color.stroke_width(2),
                ))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        Ok(())
    }
    both(stem, |r| draw(r, title, series), |r| draw(r, title, series))
}

/// Grouped bars: for each group, one bar per (label, value).
pub fn bars(stem: &Path, title: &str, groups: &[(String, Vec<(String, f64)>)]) -> Res {
    fn draw<B: DrawingBackend>(
        root: &DrawingArea<B, plotters::coord::Shift>,
        title: &str,
        groups: &[(String, Vec<(String, f64)>)],
    ) -> Res
    where
        B::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let mut labels: Vec<&str> = groups.iter().flat_map(|g| g.1.iter().map(|b| b.0.as_str())).collect();
        labels.sort_unstable();
        labels.dedup();
        let per = labels.len().max(1) as f64;
        let n = groups.len().max(1) as f64;
        let ymax = groups
            .iter()
            .flat_map(|g| g.1.iter().map(|b| b.1))
            .fold(1.0f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..n, 0.0..ymax)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len())
            .x_label_formatter(&|x| groups.get(x.floor() as usize).map_or(String::new(), |g| g.0.clone()))
            .draw()?;
        for (li, label) in labels.iter().enumerate() {
            let color = COLORS[li % COLORS.len()];
            let rects = groups.iter().enumerate().filter_map(|(gi, g)| {
                let v = g.1.iter().find(|b| b.0 == *label)?.1;
                let x0 = gi as f64 + 0.1 + 0.8 * li as f64 / per;
                Some(Rectangle::new([(x0, 0.0), (x0 + 0.8 / per * 0.9, v)], color.filled()))
            });
            chart
                .draw_series(rects)?
                .label(*label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    }
    both(stem, |r| draw(r, title, groups), |r| draw(r, title, groups))
}
