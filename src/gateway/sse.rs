//! The events of an SSE stream (the WHATWG `text/event-stream` format) read as
//! its bytes pass, in any chunking: an event's data goes straight to the usage
//! scan ([`EventData`]) line by line, so an event of any size (a Responses image
//! generation sends megabytes of base64 in one) is read without being kept. Pure.
//!
//! The reader marks where each event begins and ends in the chunks it is given, so
//! the body that passes the stream on can forward the provider's bytes unchanged
//! and still leave one event out (the usage chunk the gateway asked for itself).

use super::usage::EventData;

/// The most of an `event:` name kept (names are short: `response.completed`).
const NAME_LIMIT: usize = 128;

/// One event, read whole.
#[derive(Debug, Default)]
pub struct Event {
    /// Its `event:` field; empty when it had none.
    pub name: String,
    /// Its data, when it had a `data:` line.
    pub data: Option<EventData>,
}

/// Where an event is in the chunk given to [`Reader::push`].
#[derive(Debug)]
pub enum Mark {
    /// The event's first line begins at this offset.
    Begin(usize),
    /// The event ended with the blank line ending before this offset.
    End(usize, Box<Event>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Other,
}

#[derive(Debug)]
enum Line {
    /// At the start of a line.
    Start,
    /// In the field name (the first bytes of it; fields the reader uses are short).
    Name {
        name: [u8; 8],
        len: usize,
    },
    /// Right after the colon: one space is not part of the value.
    Colon(Field),
    Value(Field),
    /// A comment (`:` first) or a field the reader ignores: skipped to its end.
    Skip,
}

#[derive(Debug)]
pub struct Reader {
    line: Line,
    /// The last byte was a CR: an LF right after it ends no second line.
    after_cr: bool,
    /// Bytes of a byte order mark matched at the stream's start (3: done looking).
    bom: usize,
    event: Option<Event>,
    data_lines: u64,
    /// An event whose blank line ended in a CR: it ends after the LF that may follow.
    ending: Option<Box<Event>>,
}

impl Default for Reader {
    fn default() -> Self {
        Self { line: Line::Start, after_cr: false, bom: 0, event: None, data_lines: 0, ending: None }
    }
}

impl Reader {
    /// Bytes held beyond the stream's own: the current event's name and kept values.
    pub fn held(&self) -> usize {
        self.event.as_ref().map_or(0, |e| e.name.capacity() + e.data.as_ref().map_or(0, EventData::held))
    }

    /// Reads the next chunk of the stream; `mark` is told where events begin and end.
    pub fn push(&mut self, chunk: &[u8], mark: &mut impl FnMut(Mark)) {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let mut i = 0;
        while self.bom < BOM.len() && i < chunk.len() {
            match chunk[i] == BOM[self.bom] {
                true => (self.bom, i) = (self.bom + 1, i + 1),
                false => self.bom = BOM.len(),
            }
        }
        while i < chunk.len() {
            let b = chunk[i];
            if let Some(event) = self.ending.take() {
                // A CRLF blank line is the event's, LF included.
                let at = if b == b'\n' { i + 1 } else { i };
                mark(Mark::End(at, event));
            }
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                i += 1;
                continue;
            }
            if b == b'\r' || b == b'\n' {
                self.after_cr = b == b'\r';
                i += 1;
                self.line_end(i, mark);
                continue;
            }
            i += self.line_bytes(&chunk[i..], i, mark);
        }
    }

    /// The stream ended: an event still waiting for the LF after its CR ends here.
    pub fn end(&mut self, mark: &mut impl FnMut(Mark)) {
        if let Some(event) = self.ending.take() {
            mark(Mark::End(0, event));
        }
    }

    /// Bytes of a line (not its end) from `at`: how many were read.
    fn line_bytes(&mut self, bytes: &[u8], at: usize, mark: &mut impl FnMut(Mark)) -> usize {
        let run = bytes.iter().position(|b| *b == b'\r' || *b == b'\n').unwrap_or(bytes.len());
        match &mut self.line {
            Line::Start => {
                if bytes[0] == b':' {
                    self.line = Line::Skip;
                    return 1;
                }
                if self.event.is_none() {
                    self.event = Some(Event::default());
                    self.data_lines = 0;
                    mark(Mark::Begin(at));
                }
                self.line = Line::Name { name: [0; 8], len: 0 };
                0
            }
            Line::Name { name, len } => {
                let b = bytes[0];
                if b == b':' {
                    self.line = Line::Colon(field(&name[..*len]));
                } else if *len < name.len() {
                    name[*len] = b;
                    *len += 1;
                } else {
                    self.line = Line::Skip;
                }
                1
            }
            Line::Colon(field) => {
                let field = *field;
                self.value_begins(field);
                self.line = Line::Value(field);
                usize::from(bytes[0] == b' ')
            }
            Line::Value(Field::Data) => {
                if let Some(data) = self.event.as_mut().and_then(|e| e.data.as_mut()) {
                    data.push(&bytes[..run]);
                }
                run
            }
            Line::Value(Field::Event) => {
                if let Some(event) = self.event.as_mut() {
                    let room = NAME_LIMIT.saturating_sub(event.name.len());
                    let piece = String::from_utf8_lossy(&bytes[..run.min(room)]);
                    event.name.push_str(&piece);
                }
                run
            }
            Line::Value(Field::Other) | Line::Skip => run,
        }
    }

    /// A field's value begins: a data line is joined to the ones before it with a
    /// newline; an event name replaces the one before.
    fn value_begins(&mut self, field: Field) {
        let Some(event) = self.event.as_mut() else { return };
        match field {
            Field::Data => {
                let data = event.data.get_or_insert_with(EventData::default);
                if self.data_lines > 0 {
                    data.push(b"\n");
                }
                self.data_lines += 1;
            }
            Field::Event => event.name.clear(),
            Field::Other => {}
        }
    }

    /// A line ended before `at`.
    fn line_end(&mut self, at: usize, mark: &mut impl FnMut(Mark)) {
        match std::mem::replace(&mut self.line, Line::Start) {
            Line::Start => {
                if let Some(event) = self.event.take() {
                    match self.after_cr {
                        true => self.ending = Some(Box::new(event)),
                        false => mark(Mark::End(at, Box::new(event))),
                    }
                }
            }
            // A field without a colon has an empty value.
            Line::Name { name, len } => {
                let field = field(&name[..len]);
                self.value_begins(field);
            }
            Line::Colon(field) => self.value_begins(field),
            Line::Value(_) | Line::Skip => {}
        }
    }
}

fn field(name: &[u8]) -> Field {
    match name {
        b"data" => Field::Data,
        b"event" => Field::Event,
        _ => Field::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::usage::{Api, EventKind, StreamMeter};

    /// The events of `stream` cut into `size`-byte chunks, with the offsets (in the
    /// whole stream) where each began and ended, read by a meter.
    fn read(stream: &[u8], size: usize, meter: &mut StreamMeter) -> Vec<(usize, usize, String, EventKind)> {
        let mut reader = Reader::default();
        let mut out = vec![];
        let mut begin = None;
        for (n, chunk) in stream.chunks(size).enumerate() {
            let base = n * size;
            reader.push(chunk, &mut |m| match m {
                Mark::Begin(at) => begin = Some(base + at),
                Mark::End(at, event) => {
                    let kind = match event.data {
                        Some(data) => meter.event_read(&event.name, data),
                        None => EventKind::Forward,
                    };
                    out.push((begin.take().unwrap(), base + at, event.name, kind));
                }
            });
        }
        out
    }

    #[test]
    fn events_comments_and_line_ends_in_any_chunking() {
        let stream = "\u{feff}: keep-alive\n\nevent: response.created\r\ndata: {\"type\":\"response.created\",\r\ndata:\"response\":{\"model\":\"gpt-4o\"}}\r\n\r\n\
            id: 7\rretry: 10\rdata\r\r:comment\n\
            data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}}\n\n";
        for size in [1, 2, 5, 64, stream.len()] {
            let mut meter = StreamMeter::new(Api::Responses);
            let events = read(stream.as_bytes(), size, &mut meter);
            let spans: Vec<(&str, &str)> =
                events.iter().map(|(b, e, name, _)| (name.as_str(), &stream[*b..*e])).collect();
            assert_eq!(spans.len(), 3, "{size}: {spans:?}");
            assert_eq!(spans[0].0, "response.created");
            assert!(
                spans[0].1.starts_with("event: response.created") && spans[0].1.ends_with("}}\r\n\r\n"),
                "{spans:?}"
            );
            assert_eq!(spans[1], ("", "id: 7\rretry: 10\rdata\r\r"));
            assert!(spans[2].1.starts_with("data: {") && spans[2].1.ends_with("}}}\n\n"));
            assert_eq!(meter.model(), Some("gpt-4o"), "data lines are joined: {size}");
            assert!(meter.complete() && meter.reported());
            assert_eq!((meter.usage().input, meter.usage().output), (3, 2));
        }
    }

    #[test]
    fn an_event_of_megabytes_is_read_without_being_kept() {
        let image = "A".repeat(6 << 20);
        let big = format!(
            "event: response.image_generation_call.partial_image\ndata: {{\"type\":\"response.image_generation_call.partial_image\",\"partial_image_b64\":\"{image}\"}}\n\n\
             event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"model\":\"gpt-image-1\",\
             \"output\":[{{\"type\":\"image_generation_call\",\"result\":\"{image}\"}}],\"usage\":{{\"input_tokens\":50,\"output_tokens\":1056}}}}}}\n\n"
        );
        let mut reader = Reader::default();
        let mut meter = StreamMeter::new(Api::Responses);
        let mut most = 0;
        for chunk in big.as_bytes().chunks(16 * 1024) {
            reader.push(chunk, &mut |m| {
                if let Mark::End(_, event) = m
                    && let Some(data) = event.data
                {
                    meter.event_read(&event.name, data);
                }
            });
            most = most.max(reader.held());
        }
        assert!(most < 1024, "held {most} bytes");
        assert!(meter.complete());
        assert_eq!((meter.usage().input, meter.usage().output, meter.model()), (50, 1056, Some("gpt-image-1")));
    }
}
