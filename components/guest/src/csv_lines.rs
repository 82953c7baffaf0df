//! The line of a CSV file each record starts on, for the errors an upload reports by line.
//!
//! The `csv` crate's own line count goes wrong on files with CRLF line ends (a spreadsheet's):
//! it reports the first record after the header as on line 1. Its byte positions are right, but
//! a record's position may be the line end before it (CRLF files), or a blank line before it.
//! So the reader notes where each line's content starts (the first byte after a line end that
//! is not itself a line end) and on which line, and a record is on the line of the first such
//! start at or after its position. It keeps only the starts the CSV reader has read ahead, so a
//! file of any length takes no more memory than the reader's buffer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Read;
use std::rc::Rc;

#[derive(Default)]
struct Starts {
    /// `(byte offset, line)` of the content starts read but not yet passed.
    ahead: VecDeque<(u64, u64)>,
    /// Line feeds so far.
    feeds: u64,
    /// Bytes read so far.
    read: u64,
    /// Whether the last byte read ended a line.
    after_line_end: bool,
    /// The line of the last start passed, for a position after every start.
    last_line: u64,
}

/// A reader that notes where lines start, for [`LineFinder`].
pub struct LineCountingReader<R> {
    inner: R,
    starts: Rc<RefCell<Starts>>,
}

/// Turns the byte positions of the reader's records into line numbers, in increasing order.
pub struct LineFinder {
    starts: Rc<RefCell<Starts>>,
}

/// `inner` as a reader that notes its lines, and the finder of its records' lines.
pub fn count_lines<R: Read>(inner: R) -> (LineCountingReader<R>, LineFinder) {
    let starts = Rc::new(RefCell::new(Starts {
        after_line_end: true,
        last_line: 1,
        ..Starts::default()
    }));
    (
        LineCountingReader {
            inner,
            starts: Rc::clone(&starts),
        },
        LineFinder { starts },
    )
}

impl<R: Read> Read for LineCountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut starts = self.starts.borrow_mut();
        let base = starts.read;
        for (at, byte) in buf[..n].iter().enumerate() {
            match byte {
                b'\n' => {
                    starts.feeds += 1;
                    starts.after_line_end = true;
                }
                b'\r' => starts.after_line_end = true,
                _ => {
                    if starts.after_line_end {
                        let line = starts.feeds + 1;
                        starts.ahead.push_back((base + at as u64, line));
                    }
                    starts.after_line_end = false;
                }
            }
        }
        starts.read += n as u64;
        Ok(n)
    }
}

impl LineFinder {
    /// The line (from 1) of the record the CSV reader places at `byte`. Positions must come in
    /// increasing order.
    pub fn line(&self, byte: u64) -> u64 {
        let mut starts = self.starts.borrow_mut();
        while let Some((at, line)) = starts.ahead.front().copied() {
            if at >= byte {
                return line;
            }
            starts.last_line = line;
            starts.ahead.pop_front();
        }
        starts.last_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &str) -> Vec<(String, u64)> {
        let (counting, finder) = count_lines(data.as_bytes());
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .buffer_capacity(8)
            .from_reader(counting);
        reader.byte_headers().unwrap();
        let mut record = csv::ByteRecord::new();
        let mut found = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            let byte = record.position().unwrap().byte();
            found.push((
                String::from_utf8(record.get(0).unwrap().to_vec()).unwrap(),
                finder.line(byte),
            ));
        }
        found
    }

    #[test]
    fn records_are_found_on_their_lines_whatever_the_line_ends() {
        let expected = vec![("a".into(), 2), ("c".into(), 3), ("e".into(), 5)];
        assert_eq!(lines("h1,h2\na,b\nc,\"d\nd\"\ne,f\n"), expected);
        assert_eq!(lines("h1,h2\r\na,b\r\nc,\"d\r\nd\"\r\ne,f\r\n"), expected);
        assert_eq!(lines("h1,h2\r\na,b\r\nc,\"d\r\nd\"\r\ne,f"), expected);
        // Blank lines are skipped, and counted.
        assert_eq!(
            lines("h1,h2\n\na,b\n\n\nc,d\n"),
            vec![("a".into(), 3), ("c".into(), 6)]
        );
    }
}
