//! Plain-text tables, for every table loopscope prints (the report's, the blocking catalogue's,
//! the gate's).
//!
//! A [`Table`] is a list of [`Column`]s, each declared once: its heading, alignment, width and
//! how to get its cell from a row. The heading line and every row are laid out from that one
//! list, so a heading cannot drift from its column. Columns may start a group, drawn with a `│`
//! before it and an optional title above it. Columns widen to fit their widest cell (a row never
//! pushes the next columns out of line), up to an optional limit past which cells keep their right
//! end ([`clip_left`]: the file name and line of a long path matter most).
//!
//! This module only formats strings: no I/O, no environment.

/// How the heading and the cells of a column sit in its width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Padded on the right (names, paths).
    Left,
    /// Padded on the left (figures).
    Right,
}

/// One column of a [`Table`] over rows of type `R`.
pub struct Column<'a, R> {
    heading: String,
    align: Align,
    min_width: usize,
    max_width: Option<usize>,
    /// `Some(title)`: the column starts a group (`""`: a group without a title).
    group: Option<String>,
    value: Box<dyn Fn(&R) -> String + 'a>,
}

impl<'a, R> Column<'a, R> {
    /// A left-aligned column headed `heading`, its cells from `value`.
    pub fn left(heading: impl Into<String>, value: impl Fn(&R) -> String + 'a) -> Self {
        Column::new(heading, Align::Left, value)
    }

    /// A right-aligned column headed `heading`, its cells from `value`.
    pub fn right(heading: impl Into<String>, value: impl Fn(&R) -> String + 'a) -> Self {
        Column::new(heading, Align::Right, value)
    }

    fn new(heading: impl Into<String>, align: Align, value: impl Fn(&R) -> String + 'a) -> Self {
        Column { heading: heading.into(), align, min_width: 0, max_width: None, group: None, value: Box::new(value) }
    }

    /// At least `width` characters wide (wider when a cell or the heading needs it).
    pub fn width(mut self, width: usize) -> Self {
        self.min_width = width;
        self
    }

    /// At most `width` characters wide: longer cells keep their right end behind a `…`.
    pub fn clip(mut self, width: usize) -> Self {
        self.max_width = Some(width.max(1));
        self
    }

    /// Starts a group: a `│` before this column, and `title` (if not empty) above the group's
    /// headings.
    pub fn group(mut self, title: impl Into<String>) -> Self {
        self.group = Some(title.into());
        self
    }

    fn cell(&self, row: &R) -> String {
        let text = (self.value)(row);
        match self.max_width {
            Some(max) => clip_left(&text, max),
            None => text,
        }
    }
}

impl<R> std::fmt::Debug for Column<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Column")
            .field("heading", &self.heading)
            .field("align", &self.align)
            .field("min_width", &self.min_width)
            .field("max_width", &self.max_width)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// Columns laid out together: a heading line (and a line of group titles, when a group has
/// one), then one line per row.
#[derive(Debug)]
pub struct Table<'a, R> {
    columns: Vec<Column<'a, R>>,
    indent: usize,
    gap: usize,
}

impl<'a, R> Table<'a, R> {
    /// A table of these columns, not indented, one space between columns.
    pub fn new(columns: Vec<Column<'a, R>>) -> Self {
        Table { columns, indent: 0, gap: 1 }
    }

    /// Every line starts with `spaces` spaces.
    pub fn indent(mut self, spaces: usize) -> Self {
        self.indent = spaces;
        self
    }

    /// `spaces` spaces between columns (on each side of a group's `│`).
    pub fn gap(mut self, spaces: usize) -> Self {
        self.gap = spaces;
        self
    }

    /// The heading line(s) and one line per row, each ending in a newline, without trailing
    /// spaces.
    pub fn render<'r>(&self, rows: impl IntoIterator<Item = &'r R>) -> String
    where
        R: 'r,
    {
        let cells: Vec<Vec<String>> =
            rows.into_iter().map(|r| self.columns.iter().map(|c| c.cell(r)).collect()).collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let widest = cells.iter().map(|row| width_of(&row[i])).max().unwrap_or(0);
                c.min_width.max(width_of(&c.heading)).max(widest)
            })
            .collect();
        let mut out = String::new();
        if self.columns.iter().any(|c| c.group.as_deref().is_some_and(|t| !t.is_empty())) {
            out.push_str(&self.titles(&widths));
        }
        let headings: Vec<&str> = self.columns.iter().map(|c| c.heading.as_str()).collect();
        out.push_str(&self.line(&headings, &widths));
        for row in &cells {
            let row: Vec<&str> = row.iter().map(String::as_str).collect();
            out.push_str(&self.line(&row, &widths));
        }
        out
    }

    /// What goes before column `i`: nothing, the gap, or the gap around a group's `│`.
    fn separator(&self, i: usize) -> String {
        let gap = " ".repeat(self.gap);
        match (i, &self.columns[i].group) {
            (0, _) => String::new(),
            (_, Some(_)) => format!("{gap}│{gap}"),
            (_, None) => gap,
        }
    }

    fn line(&self, cells: &[&str], widths: &[usize]) -> String {
        let mut l = " ".repeat(self.indent);
        for (i, ((cell, width), column)) in cells.iter().zip(widths).zip(&self.columns).enumerate() {
            l.push_str(&self.separator(i));
            let pad = " ".repeat(width.saturating_sub(width_of(cell)));
            match column.align {
                Align::Left => {
                    l.push_str(cell);
                    l.push_str(&pad);
                }
                Align::Right => {
                    l.push_str(&pad);
                    l.push_str(cell);
                }
            }
        }
        finish(l)
    }

    /// The line of group titles: each over its group, left-aligned, clipped to the group's width.
    fn titles(&self, widths: &[usize]) -> String {
        let mut l = " ".repeat(self.indent);
        let mut i = 0;
        while i < self.columns.len() {
            // A group runs from a column that starts one to the next that does.
            let end =
                (i + 1..self.columns.len()).find(|&j| self.columns[j].group.is_some()).unwrap_or(self.columns.len());
            l.push_str(&self.separator(i));
            let span = widths[i..end].iter().sum::<usize>() + (end - i - 1) * self.gap;
            let title = self.columns[i].group.as_deref().unwrap_or("");
            let title: String = title.chars().take(span).collect();
            l.push_str(&title);
            l.push_str(&" ".repeat(span - width_of(&title)));
            i = end;
        }
        finish(l)
    }
}

fn finish(mut line: String) -> String {
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// Width of a cell in characters (every character loopscope prints is one column wide).
fn width_of(s: &str) -> usize {
    s.chars().count()
}

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Keeps the right end of a string longer than `width` characters behind a `…` (the file name
/// and line of a path matter most).
pub fn clip_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - width + 1).collect();
    format!("…{tail}")
}

/// `""` for one, `"s"` for any other count.
pub fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_and_clipping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(group(100), "100");
        assert_eq!(clip_left("src/very/long/path.rs:10:5", 13), "…path.rs:10:5");
        assert_eq!(clip_left("short", 12), "short");
        assert_eq!((plural(1), plural(0), plural(2)), ("", "s", "s"));
    }

    struct Row {
        name: &'static str,
        a: u64,
        b: u64,
    }

    fn rows() -> Vec<Row> {
        vec![Row { name: "first", a: 1, b: 22 }, Row { name: "a/rather/long/second/name", a: 1_234_567, b: 3 }]
    }

    #[test]
    fn headings_and_cells_share_one_layout() {
        let table = Table::new(vec![
            Column::left("name", |r: &Row| r.name.to_string()).clip(12),
            Column::right("a", |r: &Row| group(r.a)).width(4).group("figures"),
            Column::right("b", |r: &Row| r.b.to_string()),
            Column::left("note", |_: &Row| String::new()).group(""),
        ])
        .indent(2);
        let text = table.render(&rows());
        assert_eq!(
            text,
            [
                "               │ figures      │",
                "  name         │         a  b │ note",
                "  first        │         1 22 │",
                "  …second/name │ 1,234,567  3 │",
                "",
            ]
            .join("\n")
        );
        // Every line puts the separators in the same place: no row can drift from its heading.
        let bars: Vec<Vec<usize>> =
            text.lines().map(|l| l.chars().enumerate().filter(|(_, c)| *c == '│').map(|(i, _)| i).collect()).collect();
        assert!(bars[1..].iter().all(|b| b == &bars[1]), "{text}");
        assert_eq!(bars[0], bars[1], "the titles line up with the groups: {text}");
    }

    #[test]
    fn a_table_without_rows_is_its_heading_and_gaps_are_configurable() {
        let table = Table::new(vec![
            Column::left("rule", |r: &Row| r.name.to_string()),
            Column::right("limit", |r: &Row| r.a.to_string()),
        ])
        .gap(2);
        assert_eq!(table.render(&[]), "rule  limit\n");
        assert_eq!(
            table.render(&rows()),
            format!("rule{}limit\nfirst{}1\na/rather/long/second/name  1234567\n", " ".repeat(25), " ".repeat(28))
        );
    }
}
