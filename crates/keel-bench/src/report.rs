//! Tables, printed as Markdown.

use std::fmt::Write as _;

/// A titled Markdown table with notes under it.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// The heading.
    pub title: String,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows, each as long as `headers`.
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    /// An empty table with these headers.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Table {
            title: title.into(),
            headers: headers.iter().map(|header| header.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row.
    ///
    /// # Panics
    ///
    /// If the row's length is not the number of headers.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.headers.len(),
            "row width of table {:?}",
            self.title
        );
        self.rows.push(cells);
    }

    /// Adds a note under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The table as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "### {}\n", self.title);
        let _ = writeln!(text, "| {} |", self.headers.join(" | "));
        let alignments: Vec<&str> = (0..self.headers.len())
            .map(|column| if column == 0 { "---" } else { "---:" })
            .collect();
        let _ = writeln!(text, "| {} |", alignments.join(" | "));
        for row in &self.rows {
            let _ = writeln!(text, "| {} |", row.join(" | "));
        }
        if !self.notes.is_empty() {
            text.push('\n');
            for note in &self.notes {
                let _ = writeln!(text, "{note}");
            }
        }
        text
    }
}

/// `keel / peer` as "2.31×", or "-" when the peer's figure is zero.
pub fn ratio(keel: f64, peer: f64) -> String {
    if peer > 0.0 && keel.is_finite() {
        format!("{:.2}×", keel / peer)
    } else {
        "-".to_string()
    }
}

/// A rate with thousands grouped: 1234567.8 → "1 234 568".
pub fn rate(value: f64) -> String {
    let whole = value.round().max(0.0) as u64;
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            grouped.push('\u{2009}');
        }
        grouped.push(digit);
    }
    grouped
}
