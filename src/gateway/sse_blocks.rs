//! A provider's event stream cut into its blocks as raw bytes, for a stream whose
//! usage chunk the gateway hides: every block but that one is passed on exactly as
//! the provider sent it (comment lines such as `: ping` keep-alives, `retry:`,
//! CRLF line ends, spacing), instead of being written again from parsed events.
//! Pure.
//!
//! A block is the lines up to and including an empty line (lines end in CRLF, LF or
//! CR, as the SSE grammar says). A block *dispatches* an event when it has a `data`
//! field line (`data` alone or `data:...`): that is exactly when the SSE parser
//! (`eventsource-stream`) yields an event for it, so the n-th dispatching block is
//! the n-th parsed event, and the gateway can drop the raw block of the one event
//! it hides. Blocks that dispatch nothing (comments, a lone `retry:`) pass on as
//! soon as they are complete, so keep-alives reach the client when they are sent.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One complete block of the stream, as sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Block {
    pub bytes: Bytes,
    /// It has a `data` line: the SSE parser yields an event for it.
    pub dispatches: bool,
}

/// The stream's bytes not yet passed on, cut into blocks as they arrive.
#[derive(Debug, Default)]
pub struct Blocks {
    /// Bytes after the last complete block.
    partial: BytesMut,
    complete: VecDeque<Block>,
    /// How much of `partial` has been read into lines.
    scanned: usize,
    line_start: usize,
    has_data: bool,
    /// The last line ended in a CR: an LF right after it belongs to that line end.
    after_cr: bool,
    /// The block's empty line ended in a CR, the last byte so far: whether an LF
    /// follows (and belongs to the block) is known with the next byte.
    cut_pending: bool,
    /// Past the stream's first line (a byte-order mark may start it).
    started: bool,
}

impl Blocks {
    /// Adds bytes as they arrive from the provider.
    pub fn push(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        loop {
            if self.cut_pending {
                match self.partial.get(self.scanned) {
                    None => return,
                    Some(b'\n') => self.scanned += 1,
                    Some(_) => {}
                }
                self.cut_pending = false;
                self.after_cr = false;
                self.cut();
            }
            let Some(&byte) = self.partial.get(self.scanned) else { return };
            let end = self.scanned;
            self.scanned += 1;
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                self.line_start = self.scanned;
                continue;
            }
            if byte != b'\n' && byte != b'\r' {
                continue;
            }
            self.after_cr = byte == b'\r';
            let mut line = self.partial.get(self.line_start..end).unwrap_or_default();
            if !std::mem::replace(&mut self.started, true) {
                line = line.strip_prefix(BOM).unwrap_or(line);
            }
            let empty = line.is_empty();
            self.has_data |= line == b"data" || line.starts_with(b"data:");
            self.line_start = self.scanned;
            match (empty, byte) {
                (true, b'\r') => self.cut_pending = true,
                (true, _) => self.cut(),
                (false, _) => {}
            }
        }
    }

    /// Ends the block at what was scanned.
    fn cut(&mut self) {
        let bytes = self.partial.split_to(self.scanned).freeze();
        self.complete.push_back(Block { bytes, dispatches: std::mem::take(&mut self.has_data) });
        self.scanned = 0;
        self.line_start = 0;
    }

    /// The next complete block, when it dispatches no event (it can pass on now).
    pub fn next_quiet(&mut self) -> Option<Bytes> {
        match self.complete.front() {
            Some(block) if !block.dispatches => self.complete.pop_front().map(|b| b.bytes),
            _ => None,
        }
    }

    /// The next complete block, when it is the one the next parsed event came from.
    pub fn next_event(&mut self) -> Option<Bytes> {
        match self.complete.front() {
            Some(block) if block.dispatches => self.complete.pop_front().map(|b| b.bytes),
            _ => None,
        }
    }

    /// Everything not yet passed on, complete or not (the stream ended).
    pub fn rest(&mut self) -> Vec<Bytes> {
        let mut rest: Vec<Bytes> = self.complete.drain(..).map(|b| b.bytes).collect();
        if !self.partial.is_empty() {
            rest.push(self.partial.split().freeze());
        }
        *self = Blocks { started: self.started, ..Blocks::default() };
        rest
    }

    /// Bytes held (complete blocks and a partial one).
    pub fn held(&self) -> usize {
        self.partial.len() + self.complete.iter().map(|b| b.bytes.len()).sum::<usize>()
    }
}

/// Takes the byte-order mark off the start of a stream before the SSE parser sees
/// it, however the provider's writes split its three bytes: `eventsource-stream`
/// 0.2 strips a leading mark by slicing one byte off a three-byte character, which
/// panics. The parser is also given an empty line first ([`PARSER_PRIMER`]), so
/// it never looks for a mark itself (a second one is then part of the first
/// line, as the SSE grammar says).
#[derive(Debug, Default)]
pub struct LeadingBom {
    held: Vec<u8>,
    decided: bool,
}

/// Fed to the SSE parser before the stream: an empty line, which yields no event.
pub const PARSER_PRIMER: &[u8] = b"\n";

impl LeadingBom {
    /// What of `data` the parser gets: all of it once the stream's start is decided.
    pub fn strip(&mut self, data: Bytes) -> Bytes {
        if self.decided {
            return data;
        }
        self.held.extend_from_slice(&data);
        if self.held.len() < BOM.len() && BOM.starts_with(&self.held) {
            return Bytes::new();
        }
        self.decided = true;
        let held = std::mem::take(&mut self.held);
        match held.strip_prefix(BOM) {
            Some(rest) => Bytes::copy_from_slice(rest),
            None => Bytes::from(held),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn blocks(chunks: &[&[u8]]) -> (Vec<(String, bool)>, String) {
        let mut b = Blocks::default();
        for chunk in chunks {
            b.push(chunk);
        }
        let mut out = vec![];
        while let Some(block) = b.complete.pop_front() {
            out.push((String::from_utf8_lossy(&block.bytes).into_owned(), block.dispatches));
        }
        (out, String::from_utf8_lossy(&b.partial).into_owned())
    }

    #[test]
    fn blocks_end_at_an_empty_line_whatever_the_line_ends() {
        let (out, partial) =
            blocks(&[b": ping\n\ndata: a\n\nretry: 5\r\n\r\ndata: b\rdata\r\revent: x\ndata:c\n\ndata: half"]);
        assert_eq!(
            out,
            [
                (": ping\n\n".to_string(), false),
                ("data: a\n\n".into(), true),
                ("retry: 5\r\n\r\n".into(), false),
                ("data: b\rdata\r\r".into(), true),
                ("event: x\ndata:c\n\n".into(), true),
            ]
        );
        assert_eq!(partial, "data: half");
    }

    #[test]
    fn a_crlf_split_between_chunks_is_one_line_end() {
        // "data: x\r" then "\n\r\n": one line, then the empty line, one block.
        let (out, partial) = blocks(&[b"data: x\r", b"\n\r", b"\n: ping\n\n"]);
        assert_eq!(out, [("data: x\r\n\r\n".to_string(), true), (": ping\n\n".into(), false)]);
        assert_eq!(partial, "");
        // A CR at a chunk's end ending the empty line: the block waits for the next byte.
        let (out, partial) = blocks(&[b"data: x\n\r"]);
        assert_eq!((out, partial.as_str()), (vec![], "data: x\n\r"));
        let (out, _) = blocks(&[b"data: x\n\r", b"\ndata: y\n\n"]);
        assert_eq!(out, [("data: x\n\r\n".to_string(), true), ("data: y\n\n".into(), true)]);
        let (out, _) = blocks(&[b"data: x\r\r", b"data: y\r\r", b"\r"]);
        assert_eq!(out, [("data: x\r\r".to_string(), true), ("data: y\r\r".into(), true)]);
    }

    #[test]
    fn only_a_data_field_dispatches_and_a_bom_starts_the_first_line() {
        let (out, _) = blocks(&[b"\xEF\xBB\xBFdata: a\n\ndatax: b\n\ndata : c\n\n:data: d\n\nid: 1\nevent: e\n\n"]);
        let dispatches: Vec<bool> = out.iter().map(|(_, d)| *d).collect();
        assert_eq!(dispatches, [true, false, false, false, false]);
    }

    /// The blocks that dispatch are exactly the events the SSE parser yields, one
    /// for one, however the stream is cut into chunks.
    #[tokio::test]
    async fn dispatching_blocks_are_the_parsers_events() {
        let twice: &[u8] = b"\xEF\xBB\xBF\xEF\xBB\xBFdata: 0\n\ndata: 1\n\n";
        let stream: &[u8] =
            b"\xEF\xBB\xBFdata: 0\n\n: hi\n\ndata: 1\r\n\r\nretry: 3\n\ndata\n\ndata:\n\nevent: e\nid: 7\n\n\
            data: 2\rdata: 3\r\r:c\ndata: {\"a\": 1}\n: inside\n\n\n\ndata: 4\n\ndata: tail";
        for (stream, cut) in [stream, twice].into_iter().flat_map(|s| (1..s.len()).map(move |cut| (s, cut))) {
            let chunks: Vec<&[u8]> = stream.chunks(cut).collect();
            let mut b = Blocks::default();
            for chunk in &chunks {
                b.push(chunk);
            }
            let ours: Vec<Bytes> = std::iter::from_fn(|| {
                while b.next_quiet().is_some() {}
                b.next_event()
            })
            .collect();
            // As the gateway feeds the parser: the primer, then the stream without its mark.
            let mut bom = LeadingBom::default();
            let fed = std::iter::once(PARSER_PRIMER.to_vec())
                .chain(chunks.iter().map(|c| bom.strip(Bytes::copy_from_slice(c)).to_vec()));
            let parsed: Vec<_> =
                eventsource_stream::EventStream::new(futures::stream::iter(fed.map(Ok::<_, std::convert::Infallible>)))
                    .collect()
                    .await;
            assert!(parsed.iter().all(Result::is_ok));
            assert_eq!(ours.len(), parsed.len(), "cut every {cut} bytes: {ours:?} vs {parsed:?}");
        }
    }

    #[test]
    fn a_leading_bom_is_taken_off_however_it_is_split() {
        let stream: &[u8] = b"\xEF\xBB\xBFdata: 1\n\n";
        for cut in 1..stream.len() {
            let mut bom = LeadingBom::default();
            let out: Vec<u8> = stream.chunks(cut).flat_map(|c| bom.strip(Bytes::copy_from_slice(c)).to_vec()).collect();
            assert_eq!(out, b"data: 1\n\n", "cut every {cut}");
        }
        let mut bom = LeadingBom::default();
        assert_eq!(bom.strip(Bytes::from_static(b"\xEF")), "");
        assert_eq!(bom.strip(Bytes::from_static(b"data")), &b"\xEFdata"[..], "not a mark: given back");
        assert_eq!(bom.strip(Bytes::from_static(b"\xEF\xBB\xBF")), &b"\xEF\xBB\xBF"[..], "only at the start");
    }

    #[test]
    fn the_rest_is_every_byte_not_passed_on() {
        let mut b = Blocks::default();
        b.push(b"data: 1\n\n: ping\n\ndata: 2");
        assert_eq!(b.held(), 24);
        assert_eq!(b.next_quiet(), None, "an event block first");
        assert_eq!(b.next_event().unwrap(), "data: 1\n\n");
        let rest: Vec<u8> = b.rest().concat();
        assert_eq!(rest, b": ping\n\ndata: 2");
        assert_eq!(b.held(), 0);
    }
}
