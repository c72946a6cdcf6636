//! Writes an evaluation to a folder: `eval.json`, `eval.md`, the plots as PNG files and
//! `report.html`, which embeds the plots and thumbnails as data URIs so that it is one
//! self-contained file to mail or archive.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use paperclip_clip::augment::{RgbImage, resize_square};

use super::Evaluation;
use super::error::{EvalError, io};
use super::plots::{Plot, draw_all};
use super::report::{EvalReport, one_line};
use super::search::SearchResult;

/// Side of the example thumbnails in the HTML report, in pixels.
const THUMBNAIL_PX: usize = 160;

/// Writes every report file under `out_dir` and returns their paths.
pub fn write_all(evaluation: &Evaluation, out_dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    std::fs::create_dir_all(out_dir).map_err(|e| io(out_dir, e))?;
    let report = &evaluation.report;
    let mut written = Vec::new();

    let json = serde_json::to_string_pretty(report)
        .map_err(|e| EvalError::Invalid(format!("the report is not serializable: {e}")))?;
    written.push(write(out_dir, "eval.json", json.as_bytes())?);
    written.push(write(out_dir, "eval.md", report.to_markdown().as_bytes())?);

    let plots = draw_all(report)?;
    for plot in &plots {
        written.push(write(out_dir, &plot.file_name, &plot.png)?);
    }
    let thumbnails = thumbnails(evaluation)?;
    let html = html_report(report, &plots, &thumbnails);
    written.push(write(out_dir, "report.html", html.as_bytes())?);
    Ok(written)
}

/// Writes one file through a temporary name, so a reader never sees half a file.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, EvalError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    // Errors name the file the user asked for, not the temporary one.
    std::fs::write(&tmp, bytes).map_err(|e| io(&path, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(path)
}

/// PNG thumbnails of the description examples, in report order.
fn thumbnails(evaluation: &Evaluation) -> Result<Vec<Vec<u8>>, EvalError> {
    evaluation
        .report
        .descriptions
        .iter()
        .map(|d| thumbnail_png(evaluation.data.image(d.sample_index)?.as_ref()))
        .collect()
}

/// Encodes a square PNG thumbnail of [`THUMBNAIL_PX`] pixels.
pub fn thumbnail_png(image: &RgbImage) -> Result<Vec<u8>, EvalError> {
    let small = resize_square(image, THUMBNAIL_PX)?;
    let buffer = image::RgbImage::from_raw(
        small.width_px() as u32,
        small.height_px() as u32,
        small.into_pixels(),
    )
    .ok_or_else(|| EvalError::Invalid("thumbnail buffer has the wrong size".into()))?;
    let mut png = Vec::new();
    buffer
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| EvalError::Invalid(format!("cannot encode a thumbnail: {e}")))?;
    Ok(png)
}

/// Writes the search gallery, one card per hit with its thumbnail, to `path`.
pub fn write_gallery(
    path: &Path,
    result: &SearchResult,
    thumbnails: &[Vec<u8>],
) -> Result<(), EvalError> {
    let title = format!(
        "\u{201c}{}\u{201d} in {}@{}",
        result.query, result.dataset, result.version
    );
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}{GALLERY_STYLE}</style></head><body>\n<h1>{}</h1>\n<p>The {} images \
         nearest to the query among {}, by cosine similarity under <code>{}</code>.</p>\n\
         <div class=\"gallery\">\n",
        escape(&title),
        escape(&title),
        result.hits.len(),
        result.searched,
        escape(&result.checkpoint)
    );
    for (hit, png) in result.hits.iter().zip(thumbnails) {
        html.push_str(&format!(
            "<div class=\"card\"><img src=\"{}\" alt=\"{}\"><div><b>{}.</b> {:.3}<br>\
             proposal {}{}<br><code>{}</code><div class=\"caption\">{}</div></div></div>\n",
            data_uri(png),
            escape(&hit.key),
            hit.rank,
            hit.similarity,
            hit.proposal_id,
            hit.target_name
                .as_ref()
                .map(|t| format!(", {}", escape(t)))
                .unwrap_or_default(),
            escape(&hit.key),
            escape(&one_line(&hit.caption, 240))
        ));
    }
    html.push_str("</div></body></html>\n");
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| EvalError::Invalid(format!("{} is not a file name", path.display())))?;
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    write(dir, &name.to_string_lossy(), html.as_bytes())?;
    Ok(())
}

const GALLERY_STYLE: &str = ".gallery{display:grid;grid-template-columns:repeat(auto-fill,\
minmax(240px,1fr));gap:1em}.card{border:1px solid #ddd;padding:.5em;font-size:90%}\
.card img{width:100%;height:auto}";

fn data_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;\
color:#222;padding:0 1em}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}\
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}\
.plots img{width:48%;min-width:380px;margin:0 1% 1em 0}\
.example{display:flex;gap:1em;border-top:1px solid #ddd;padding:1em 0}\
.example img{width:160px;height:160px;flex:none}.caption{color:#555;font-size:90%}\
.labels{margin:.4em 0 0 0;padding-left:1.2em}code{background:#f3f3f3;padding:0 3px}\
.warning{background:#fff4e5;border-left:4px solid #e69f00;padding:.4em .8em}";

fn html_report(report: &EvalReport, plots: &[Plot], thumbnails: &[Vec<u8>]) -> String {
    let title = format!(
        "Retrieval evaluation of {}@{} ({} split)",
        report.dataset, report.version, report.split
    );
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<p>{}. Ranks \
         count ties against the match. Seed {}. paperclip {}, {}.</p>\n",
        escape(&title),
        escape(&title),
        escape(&report.summary_line()),
        report.seed,
        escape(&report.code_version),
        escape(&report.created_at)
    );
    for warning in &report.warnings {
        html.push_str(&format!(
            "<p class=\"warning\"><b>Warning:</b> {}</p>\n",
            escape(warning)
        ));
    }
    html.push_str(&metrics_table(report));
    html.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
    for plot in plots {
        html.push_str(&format!(
            "<img src=\"{}\" alt=\"{}\" title=\"{}\">\n",
            data_uri(&plot.png),
            escape(&plot.title),
            escape(&plot.title)
        ));
    }
    html.push_str("</div>\n");
    html.push_str(&descriptions(report, thumbnails));
    html.push_str(&models_list(report));
    html.push_str("</body></html>\n");
    html
}

fn metrics_table(report: &EvalReport) -> String {
    let mut html = String::from("<h2>Metrics</h2>\n<table><tr><th>metric</th><th>random</th>");
    for model in &report.models {
        html.push_str(&format!("<th>{}</th>", escape(&model.label)));
    }
    html.push_str("</tr>\n");
    for row in report.rows() {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td>",
            escape(&row.name),
            escape(&row.random)
        ));
        for value in &row.values {
            html.push_str(&format!("<td>{}</td>", escape(value)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    html
}

fn descriptions(report: &EvalReport, thumbnails: &[Vec<u8>]) -> String {
    if report.descriptions.is_empty() {
        return String::new();
    }
    let mut html = format!(
        "<h2>Description retrieval</h2>\n<p>{}</p>\n",
        escape(&report.descriptions_line())
    );
    for (d, png) in report.descriptions.iter().zip(thumbnails) {
        html.push_str(&format!(
            "<div class=\"example\"><img src=\"{}\" alt=\"{}\"><div><b>{}</b> (proposal {})\
             <div class=\"caption\">{}</div>",
            data_uri(png),
            escape(&d.key),
            escape(&d.key),
            d.proposal_id,
            escape(&one_line(&d.caption, 400))
        ));
        for (model, top) in report.models.iter().zip(&d.top_labels) {
            let names: Vec<String> = top
                .iter()
                .map(|s| format!("{} ({:.3})", escape(&s.label), s.similarity))
                .collect();
            html.push_str(&format!(
                "<ul class=\"labels\"><li><b>{}</b>: {}</li></ul>",
                escape(&model.label),
                names.join(", ")
            ));
        }
        html.push_str("</div></div>\n");
    }
    html
}

fn models_list(report: &EvalReport) -> String {
    let mut html = String::from("<h2>Checkpoints</h2>\n<ul>\n");
    for model in &report.models {
        html.push_str(&format!(
            "<li><b>{}</b>: <code>{}</code>, weights SHA-256 <code>{}</code></li>\n",
            escape(&model.label),
            escape(&model.checkpoint),
            escape(&model.weights_sha256)
        ));
    }
    html.push_str("</ul>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
