//! PNG plots of a report, drawn with plotters on an RGB buffer and encoded by `image`.
//!
//! plotters draws text only through a system font loader. Here text is rasterized with
//! ab_glyph from a font compiled into the binary (Ubuntu Light, from egui's font crate),
//! so the plots look the same on every machine, fonts installed or not.

use std::io::Cursor;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontTransform,
};

use super::error::EvalError;
use super::metrics::Direction;
use super::report::{EvalReport, HISTOGRAM_BINS};

/// Width and height of every plot, in pixels.
pub const PLOT_SIZE_PX: (u32, u32) = (800, 560);

/// Colours of the models, in report order (colour-blind safe, Okabe–Ito).
const MODEL_COLOURS: [RGBColor; 4] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
];

/// A plot file: its name and PNG bytes.
#[derive(Debug, Clone)]
pub struct Plot {
    /// File name, for example `retrieval-image-to-text.png`.
    pub file_name: String,
    /// Alternative text for the HTML report.
    pub title: String,
    /// The PNG.
    pub png: Vec<u8>,
}

/// Draws every plot of a report: accuracy against fraction for each direction, then one
/// similarity histogram per model.
pub fn draw_all(report: &EvalReport) -> Result<Vec<Plot>, EvalError> {
    let mut plots = Vec::new();
    for direction in Direction::BOTH {
        plots.push(retrieval_curve(report, direction)?);
    }
    for (i, _) in report.models.iter().enumerate() {
        plots.push(similarity_histogram(report, i)?);
    }
    Ok(plots)
}

fn plot_error(name: &str, error: impl std::fmt::Display) -> EvalError {
    EvalError::Plot {
        name: name.to_string(),
        message: error.to_string(),
    }
}

/// Draws into a white RGB buffer and returns it as PNG.
fn render(
    name: &str,
    draw: impl FnOnce(
        DrawingArea<TextBackend<BitMapBackend<'_>>, plotters::coord::Shift>,
    ) -> Result<(), String>,
) -> Result<Vec<u8>, EvalError> {
    let (width, height) = PLOT_SIZE_PX;
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    {
        let backend = TextBackend::new(BitMapBackend::with_buffer(&mut buffer, (width, height)))
            .map_err(|e| plot_error(name, e))?;
        let root = backend.into_drawing_area();
        draw(root.clone()).map_err(|e| plot_error(name, e))?;
        root.present().map_err(|e| plot_error(name, e))?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer)
        .ok_or_else(|| plot_error(name, "the plot buffer has the wrong size"))?;
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| plot_error(name, e))?;
    Ok(png)
}

fn retrieval_curve(report: &EvalReport, direction: Direction) -> Result<Plot, EvalError> {
    let slug = match direction {
        Direction::ImageToText => "image-to-text",
        Direction::TextToImage => "text-to-image",
    };
    // The plot font has no arrow glyph, so the title spells the direction out.
    let title = format!(
        "{} retrieval, {}@{} {} ({} pairs)",
        direction.label().replace('→', " to "),
        report.dataset,
        report.version,
        report.split,
        report.samples
    );
    let png = render(slug, |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("retrieval fraction k")
            .y_desc("accuracy (match within the top k)")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(|e| e.to_string())?;

        let first = report.models.first().ok_or("no model to plot")?;
        let curve = |m: &super::report::ModelEval| match direction {
            Direction::ImageToText => m.image_to_text.curve.clone(),
            Direction::TextToImage => m.text_to_image.curve.clone(),
        };
        let random: Vec<(f64, f64)> = curve(first)
            .iter()
            .map(|p| (p.fraction, p.random))
            .collect();
        chart
            .draw_series(DashedLineSeries::new(
                random,
                6,
                4,
                Color::stroke_width(&BLACK.mix(0.6), 2),
            ))
            .map_err(|e| e.to_string())?
            .label("random")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6)));
        for (i, model) in report.models.iter().enumerate() {
            let colour = MODEL_COLOURS[i % MODEL_COLOURS.len()];
            let points: Vec<(f64, f64)> = curve(model)
                .iter()
                .map(|p| (p.fraction, p.accuracy))
                .collect();
            chart
                .draw_series(LineSeries::new(points, Color::stroke_width(&colour, 3)))
                .map_err(|e| e.to_string())?
                .label(model.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], Color::stroke_width(&colour, 3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| e.to_string())
    })?;
    Ok(Plot {
        file_name: format!("retrieval-{slug}.png"),
        title,
        png,
    })
}

fn similarity_histogram(report: &EvalReport, index: usize) -> Result<Plot, EvalError> {
    let model = &report.models[index];
    let title = format!("cosine similarity, {}", model.label);
    let name = format!("similarity-{}", index + 1);
    let total = report.samples.max(1) as f64;
    let matched = &model.similarity.matched_counts;
    let shuffled = &model.similarity.shuffled_counts;
    let peak = matched
        .iter()
        .chain(shuffled)
        .map(|&c| c as f64 / total)
        .fold(0.0, f64::max);

    let png = render(&name, |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d(-1f64..1f64, 0f64..(peak * 1.1).max(0.05))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("cosine similarity of image and caption")
            .y_desc("fraction of pairs")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(|e| e.to_string())?;

        let width = 2.0 / HISTOGRAM_BINS as f64;
        for (counts, colour, label) in [
            (shuffled, RGBColor(120, 120, 120), "shuffled pairs"),
            (
                matched,
                MODEL_COLOURS[index % MODEL_COLOURS.len()],
                "matched pairs",
            ),
        ] {
            let bars = counts.iter().enumerate().map(move |(bin, &count)| {
                let x0 = -1.0 + bin as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width, count as f64 / total)],
                    colour.mix(0.55).filled(),
                )
            });
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| e.to_string())
    })?;
    Ok(Plot {
        file_name: format!("{name}.png"),
        title,
        png,
    })
}

/// A backend that draws text with ab_glyph and everything else with `inner`.
pub struct TextBackend<B> {
    inner: B,
    font: FontRef<'static>,
}

impl<B: DrawingBackend> TextBackend<B> {
    /// Wraps `inner`; returns an error when the compiled-in font cannot be parsed.
    pub fn new(inner: B) -> Result<Self, String> {
        let font = FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|e| format!("the built-in font is unreadable: {e}"))?;
        Ok(Self { inner, font })
    }

    /// Lays out `text` at `size_px`: its width and height, and each glyph placed on a
    /// baseline at the font's ascent.
    fn layout(&self, text: &str, size_px: f32) -> (f32, f32, Vec<ab_glyph::Glyph>) {
        let scaled = self.font.as_scaled(PxScale::from(size_px));
        let mut caret = 0.0;
        let mut previous = None;
        let mut glyphs = Vec::new();
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(previous) = previous {
                caret += scaled.kern(previous, id);
            }
            glyphs.push(id.with_scale_and_position(size_px, point(caret, scaled.ascent())));
            caret += scaled.h_advance(id);
            previous = Some(id);
        }
        (caret, scaled.ascent() - scaled.descent(), glyphs)
    }
}

impl<B: DrawingBackend> DrawingBackend for TextBackend<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vertices: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vertices, style)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        let (width, height, glyphs) = self.layout(text, style.size() as f32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0.0,
            VPos::Center => -height / 2.0,
            VPos::Bottom => -height,
        };
        let transform = style.transform();

        let mut pixels = Vec::new();
        for glyph in glyphs {
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                let local_x = (bounds.min.x + x as f32 + dx).round() as i32;
                let local_y = (bounds.min.y + y as f32 + dy).round() as i32;
                let (x, y) = match transform {
                    FontTransform::None => (local_x, local_y),
                    FontTransform::Rotate90 => (-local_y, local_x),
                    FontTransform::Rotate180 => (-local_x, -local_y),
                    FontTransform::Rotate270 => (local_y, -local_x),
                };
                pixels.push(((pos.0 + x, pos.1 + y), coverage));
            });
        }
        for (point, coverage) in pixels {
            if coverage > 0.0 {
                let shade = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                self.inner.draw_pixel(point, shade)?;
            }
        }
        Ok(())
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (width, height, _) = self.layout(text, style.size() as f32);
        Ok((width.ceil() as u32, height.ceil() as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_with_the_built_in_font() {
        let (width, height) = (120u32, 40u32);
        let mut buffer = vec![255u8; (width * height * 3) as usize];
        {
            let backend =
                TextBackend::new(BitMapBackend::with_buffer(&mut buffer, (width, height))).unwrap();
            let root = backend.into_drawing_area();
            root.draw_text(
                "k = 0.1",
                &("sans-serif", 20).into_text_style(&root),
                (4, 4),
            )
            .unwrap();
            root.present().unwrap();
        }
        let dark = buffer.chunks(3).filter(|p| p[0] < 128).count();
        assert!(dark > 50, "only {dark} dark pixels: the text was not drawn");
    }
}
