use crate::ReportError;
use std::path::Path;

/// A piece of a report section.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A paragraph of plain text (escaped).
    Text(String),
    /// A table of plain-text cells (escaped).
    Table {
        /// Column headers.
        headers: Vec<String>,
        /// Rows of cells.
        rows: Vec<Vec<String>>,
    },
    /// An SVG document embedded inline, with a caption.
    Svg {
        /// Caption under the figure.
        caption: String,
        /// The SVG document, as produced by [`crate::render_svg`].
        svg: String,
    },
}

/// A titled part of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Heading.
    pub heading: String,
    /// Content, in order.
    pub blocks: Vec<Block>,
}

/// A self-contained HTML report: one file, no scripts, no external resources.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Page title.
    pub title: String,
    /// Sections, in order.
    pub sections: Vec<Section>,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}\
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}\
figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:90%}";

impl Report {
    /// The HTML document.
    pub fn to_html(&self) -> String {
        let mut h = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
            escape(&self.title),
            escape(&self.title)
        );
        for s in &self.sections {
            h.push_str(&format!("<section>\n<h2>{}</h2>\n", escape(&s.heading)));
            for b in &s.blocks {
                match b {
                    Block::Text(t) => h.push_str(&format!("<p>{}</p>\n", escape(t))),
                    Block::Table { headers, rows } => {
                        h.push_str("<table>\n<tr>");
                        for c in headers {
                            h.push_str(&format!("<th>{}</th>", escape(c)));
                        }
                        h.push_str("</tr>\n");
                        for r in rows {
                            h.push_str("<tr>");
                            for c in r {
                                h.push_str(&format!("<td>{}</td>", escape(c)));
                            }
                            h.push_str("</tr>\n");
                        }
                        h.push_str("</table>\n");
                    }
                    Block::Svg { caption, svg } => {
                        // plotters writes a bare <svg> element; drop an XML prolog if one is
                        // ever present, since it is not allowed inside HTML.
                        let body = match svg.find("<svg") {
                            Some(i) => &svg[i..],
                            None => svg.as_str(),
                        };
                        h.push_str(&format!(
                            "<figure>\n{body}\n<figcaption>{}</figcaption>\n</figure>\n",
                            escape(caption)
                        ));
                    }
                }
            }
            h.push_str("</section>\n");
        }
        h.push_str("</body>\n</html>\n");
        h
    }

    /// Writes the report atomically.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        kiln_core::fsutil::write_atomic(path, self.to_html().as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_svg_embedded() {
        let r = Report {
            title: "run <1>".into(),
            sections: vec![Section {
                heading: "a & b".into(),
                blocks: vec![
                    Block::Text("x < y".into()),
                    Block::Table {
                        headers: vec!["k".into(), "v".into()],
                        rows: vec![vec!["acc".into(), "0.9".into()]],
                    },
                    Block::Svg {
                        caption: "c".into(),
                        svg: "<?xml version=\"1.0\"?><svg><rect/></svg>".into(),
                    },
                ],
            }],
        };
        let h = r.to_html();
        assert!(h.contains("<title>run &lt;1&gt;</title>"));
        assert!(h.contains("<h2>a &amp; b</h2>") && h.contains("<p>x &lt; y</p>"));
        assert!(h.contains("<svg><rect/></svg>") && !h.contains("<?xml"));
        assert!(
            !h.contains("<script") && !h.contains("src="),
            "self-contained"
        );
    }
}
