//! What the real-data loaders ([`super::ptbxl`], [`super::mimic`]) share: reading the CSV
//! index tables of a data set row by row, and the index entry of one WFDB record with the
//! lazy read that turns it into a [`LabelledRecord`].
//!
//! The CSV reader follows RFC 4180 (fields quoted with `"` may hold commas, doubled quotes and
//! line breaks; `\r\n` or `\n` line ends) and streams: a table of 800,000 rows is never held
//! in memory. Every error names the file and the 1-based line the row starts on.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Component, Path, PathBuf};

use meit::wfdb::{WfdbError, read_record};

use super::{DataError, LabelledRecord, Split};

/// One CSV table opened for reading: its header and a stream of rows.
pub(super) struct CsvTable {
    path: PathBuf,
    columns: Vec<String>,
    reader: BufReader<File>,
    /// Physical lines consumed so far.
    line: usize,
}

/// One data row of a [`CsvTable`].
pub(super) struct CsvRow {
    /// 1-based line the row starts on.
    pub line: usize,
    fields: Vec<String>,
}

impl CsvTable {
    /// Opens `path` and reads its header row.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut table = CsvTable {
            path: path.to_path_buf(),
            columns: Vec::new(),
            reader: BufReader::new(file),
            line: 0,
        };
        match table.next_row()? {
            Some(header) => {
                table.columns = header.fields.iter().map(|c| c.trim().to_string()).collect();
                Ok(table)
            }
            None => Err(table.error(1, "empty file: no header row")),
        }
    }

    /// The position of column `name`; an error naming the file when it has none.
    pub fn column(&self, name: &str) -> Result<usize, DataError> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| self.error(1, format!("no `{name}` column in the header")))
    }

    /// Whether the header has column `name`.
    pub fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c == name)
    }

    /// A table error at `line` of this file.
    pub fn error(&self, line: usize, message: impl Into<String>) -> DataError {
        DataError::Table {
            path: self.path.clone(),
            line,
            message: message.into(),
        }
    }

    /// The next data row, or `None` at the end of the file. A row with a different number of
    /// fields than the header is an error.
    pub fn next_data_row(&mut self) -> Result<Option<CsvRow>, DataError> {
        let Some(row) = self.next_row()? else {
            return Ok(None);
        };
        if row.fields.len() != self.columns.len() {
            return Err(self.error(
                row.line,
                format!(
                    "{} fields in a row, {} columns in the header",
                    row.fields.len(),
                    self.columns.len()
                ),
            ));
        }
        Ok(Some(row))
    }

    /// Reads one physical line (without its line end); `None` at the end of the file.
    fn physical_line(&mut self) -> Result<Option<String>, DataError> {
        let mut bytes = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut bytes)
            .map_err(|source| DataError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| self.error(self.line, "not UTF-8 text"))
    }

    /// The next row (header or data), joining the physical lines of quoted line breaks.
    /// Blank lines between rows are skipped.
    fn next_row(&mut self) -> Result<Option<CsvRow>, DataError> {
        let mut text = loop {
            match self.physical_line()? {
                None => return Ok(None),
                Some(l) if l.is_empty() => continue,
                Some(l) => break l,
            }
        };
        let start = self.line;
        loop {
            match split_fields(&text) {
                Ok(Some(fields)) => {
                    return Ok(Some(CsvRow {
                        line: start,
                        fields,
                    }));
                }
                Ok(None) => match self.physical_line()? {
                    Some(more) => {
                        text.push('\n');
                        text.push_str(&more);
                    }
                    None => return Err(self.error(start, "quoted field never closed")),
                },
                Err(message) => return Err(self.error(start, message)),
            }
        }
    }
}

/// Splits one CSV row into fields; `Ok(None)` when a quoted field is still open at the end
/// (the row continues on the next line).
fn split_fields(text: &str) -> Result<Option<Vec<String>>, String> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Ok(None),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(Some(fields));
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!(
                        "`{c}` after the closing quote of field {}",
                        fields.len() + 1
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(Some(fields));
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

impl CsvRow {
    /// Field `column` (a position from [`CsvTable::column`]), trimmed.
    pub fn get(&self, column: usize) -> &str {
        self.fields.get(column).map_or("", |f| f.trim())
    }
}

/// The WFDB header file (`<relative>.hea`) of a record path from an index table, under
/// `root`; `None` unless the path is relative and free of `..`, so a table cannot point
/// outside its data set.
pub(super) fn header_in(root: &Path, relative: &str) -> Option<PathBuf> {
    let rel = Path::new(relative);
    let inside = !relative.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    inside.then(|| root.join(format!("{relative}.hea")))
}

/// The index entry of one record: everything the tables say about it, and where its signal is.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct IndexedRecord {
    /// [`LabelledRecord::id`].
    pub id: String,
    /// The record's WFDB header file (`.hea`).
    pub header: PathBuf,
    /// [`LabelledRecord::report`].
    pub report: String,
    /// [`LabelledRecord::codes`].
    pub codes: Vec<String>,
    /// [`LabelledRecord::rate_bpm`].
    pub rate_bpm: Option<f32>,
}

impl IndexedRecord {
    /// Reads the signal. The record keeps its file's lead order and rate; a missing or
    /// truncated file, a checksum that does not match the samples, or a signal that is not a
    /// standard lead is an error naming the header file.
    pub fn load(&self) -> Result<LabelledRecord, DataError> {
        let wfdb = |source| DataError::Wfdb {
            path: self.header.clone(),
            source,
        };
        let record = read_record(&self.header).map_err(wfdb)?;
        let mismatched = record.checksum_mismatches();
        if !mismatched.is_empty() {
            return Err(wfdb(WfdbError::Data(format!(
                "the samples of signals {mismatched:?} do not add up to the header's checksums"
            ))));
        }
        let recording = record.to_recording().map_err(wfdb)?;
        Ok(LabelledRecord {
            id: self.id.clone(),
            recording,
            report: self.report.clone(),
            codes: self.codes.clone(),
            rate_bpm: self.rate_bpm,
            withheld_reports: Vec::new(),
        })
    }
}

/// The records of a data set on disk, by split: index entries read from its table, signals
/// read when a record is asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitIndex {
    train: Vec<IndexedRecord>,
    validation: Vec<IndexedRecord>,
    test: Vec<IndexedRecord>,
}

impl SplitIndex {
    /// Adds `record` to `split`.
    pub(super) fn push(&mut self, split: Split, record: IndexedRecord) {
        self.entries_mut(split).push(record);
    }

    /// The entries of `split`, in table order.
    pub(super) fn entries(&self, split: Split) -> &[IndexedRecord] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }

    /// Number of records in `split`.
    pub fn len(&self, split: Split) -> usize {
        self.entries(split).len()
    }

    /// Whether `split` has no records.
    pub fn is_empty(&self, split: Split) -> bool {
        self.len(split) == 0
    }

    /// Record `index` of `split` (table order), read from disk; `None` past the end.
    pub fn record(&self, split: Split, index: usize) -> Option<Result<LabelledRecord, DataError>> {
        self.entries(split).get(index).map(IndexedRecord::load)
    }

    /// The records of `split` in table order, each read from disk when the iterator reaches it.
    pub fn records(
        &self,
        split: Split,
    ) -> impl Iterator<Item = Result<LabelledRecord, DataError>> + '_ {
        self.entries(split).iter().map(IndexedRecord::load)
    }

    fn entries_mut(&mut self, split: Split) -> &mut Vec<IndexedRecord> {
        match split {
            Split::Train => &mut self.train,
            Split::Validation => &mut self.validation,
            Split::Test => &mut self.test,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The file, line and message of a table error; panics on anything else.
    pub(in crate::data) fn table_error<T: std::fmt::Debug>(
        result: Result<T, DataError>,
    ) -> (PathBuf, usize, String) {
        match result {
            Err(DataError::Table {
                path,
                line,
                message,
            }) => (path, line, message),
            other => panic!("expected a table error, got {other:?}"),
        }
    }

    fn table(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.csv");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    fn rows(path: &Path) -> Result<Vec<(usize, Vec<String>)>, DataError> {
        let mut t = CsvTable::open(path)?;
        let mut out = Vec::new();
        while let Some(row) = t.next_data_row()? {
            out.push((row.line, row.fields));
        }
        Ok(out)
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_line_breaks() -> Result<(), DataError> {
        let (_d, path) = table(
            "id,report,codes\r\n1,\"sinus rhythm, normal\",\"{'SR': 0.0}\"\r\n\
             2,\"say \"\"hi\"\"\nnext line\",\n3,,x\n",
        );
        let got = rows(&path)?;
        assert_eq!(
            got,
            vec![
                (
                    2,
                    vec![
                        "1".into(),
                        "sinus rhythm, normal".into(),
                        "{'SR': 0.0}".into()
                    ]
                ),
                (
                    3,
                    vec!["2".into(), "say \"hi\"\nnext line".into(), String::new()]
                ),
                (5, vec!["3".into(), String::new(), "x".into()]),
            ]
        );
        Ok(())
    }

    #[test]
    fn malformed_csv_is_a_table_error_with_its_line() {
        for (text, line) in [
            ("a,b\n1,2\n3\n", 3),
            ("a,b\n1,\"open\n2,3\n", 2),
            ("a,b\n1,\"x\"y\n", 2),
        ] {
            let (_d, path) = table(text);
            match rows(&path) {
                Err(DataError::Table {
                    line: l, path: p, ..
                }) => {
                    assert_eq!((l, p), (line, path.clone()), "{text:?}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let (_d, path) = table("");
        assert!(matches!(
            CsvTable::open(&path),
            Err(DataError::Table { line: 1, .. })
        ));
    }

    #[test]
    fn index_paths_stay_inside_the_data_set() {
        let root = Path::new("/data/ptbxl");
        assert_eq!(
            header_in(root, "records500/00000/00001_hr"),
            Some(root.join("records500/00000/00001_hr.hea"))
        );
        assert_eq!(header_in(root, "/etc/passwd"), None);
        assert_eq!(header_in(root, "records500/../../x"), None);
        assert_eq!(header_in(root, ""), None);
    }
}
