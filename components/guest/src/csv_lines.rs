//! The line of a CSV file each record starts on, for the errors an upload reports by line; and
//! a reader that drops the byte order mark a spreadsheet writes ([`SkipBom`]).
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

/// Reads the records of `reader` after its header, each with the line it starts on, as they
/// arrive: `each(line, Ok(record))`, or `each(line, Err(why))` for a line the CSV reader
/// refuses; blank lines are skipped. It stops at an error of `each`, or at the first failure to
/// read the body itself, which it answers with the line it was on, so that the caller keeps what
/// it took and says how far it got.
pub fn each_record<R: Read, E>(
    reader: &mut csv::Reader<LineCountingReader<R>>,
    lines: &LineFinder,
    mut each: impl FnMut(u64, Result<&csv::ByteRecord, String>) -> Result<(), E>,
) -> Result<Option<(u64, std::io::Error)>, E> {
    let mut record = csv::ByteRecord::new();
    loop {
        let line = lines.line(reader.position().byte());
        match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(err) => {
                let at = err.position().map_or(line, |at| lines.line(at.byte()));
                let why = err.to_string();
                match err.into_kind() {
                    csv::ErrorKind::Io(io) => return Ok(Some((line, io))),
                    _ => each(at, Err(why))?,
                }
                continue;
            }
        }
        let line = record.position().map_or(line, |at| lines.line(at.byte()));
        // A blank line (the one a spreadsheet leaves at the end) is no record.
        if record.len() == 1 && record.get(0).is_some_and(<[u8]>::is_empty) {
            continue;
        }
        each(line, Ok(&record))?;
    }
}

/// A reader that drops a spreadsheet's UTF-8 byte order mark from the start of a stream.
pub struct SkipBom<R> {
    inner: R,
    start: Vec<u8>,
    checked: bool,
}

impl<R: std::io::Read> SkipBom<R> {
    pub fn new(inner: R) -> SkipBom<R> {
        SkipBom {
            inner,
            start: Vec::new(),
            checked: false,
        }
    }
}

impl<R: std::io::Read> std::io::Read for SkipBom<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.checked {
            // The first three bytes, however the stream cuts them.
            while self.start.len() < 3 {
                let mut byte = [0u8; 3];
                let want = 3 - self.start.len();
                let got = self.inner.read(&mut byte[..want])?;
                if got == 0 {
                    break;
                }
                self.start.extend_from_slice(&byte[..got]);
            }
            if self.start == b"\xEF\xBB\xBF" {
                self.start.clear();
            }
            self.checked = true;
        }
        if !self.start.is_empty() {
            let n = self.start.len().min(buf.len());
            buf[..n].copy_from_slice(&self.start[..n]);
            self.start.drain(..n);
            return Ok(n);
        }
        self.inner.read(buf)
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

    /// Reads `bytes` through [`SkipBom`], `chunk` bytes at a time as a body stream might.
    fn without_bom(bytes: &[u8], chunk: usize) -> Vec<u8> {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        SkipBom::new(Chunked(bytes, chunk))
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_byte_order_mark_is_dropped_however_the_stream_cuts_it() {
        for chunk in [1, 2, 3, 64] {
            assert_eq!(without_bom(b"\xEF\xBB\xBFaddress\n", chunk), b"address\n");
            assert_eq!(without_bom(b"address\n", chunk), b"address\n");
            assert_eq!(without_bom(b"ab", chunk), b"ab");
            assert_eq!(without_bom(b"", chunk), b"");
            // Only at the start.
            assert_eq!(without_bom(b"a\xEF\xBB\xBF", chunk), b"a\xEF\xBB\xBF");
        }
    }
}
