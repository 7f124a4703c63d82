//! Reads a few values out of a JSON document as its bytes pass, without keeping the
//! document: the gateway needs an answer's `model` and `usage` (and a stream event's
//! `type`, `choices`, `response.usage`, ...), never the text, vectors or images around
//! them. Pure: bytes in, the chosen values' raw JSON out.
//!
//! Objects on the way to a chosen path are followed key by key; every other value is
//! skipped by counting brackets outside strings, so its length and nesting cost no
//! memory: a 20 MiB embeddings answer, an 8 MiB `[0,0,…]` or a million nested `[` are
//! read in constant space. A chosen value is kept verbatim up to [`CAPTURE_LIMIT`]
//! bytes (a usage object is a few hundred) and parsed afterwards by its caller with
//! serde into a typed struct.
//!
//! Skipped values are checked only for balance, not for every rule of JSON: the
//! provider is trusted to send JSON, the scan has to find out where a value ends and
//! whether the document was cut, and the values kept are parsed strictly.

/// The most bytes of one chosen value kept; a longer one is [`Captured::TooLarge`].
pub const CAPTURE_LIMIT: usize = 64 * 1024;
/// Keys longer than this are compared as "some other key" (the chosen ones are short).
const KEY_LIMIT: usize = 64;

/// Paths of object keys from the top of the document, at most 32.
pub type Paths = &'static [&'static [&'static str]];

/// A chosen value, as its raw JSON text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Captured {
    #[default]
    Absent,
    Value(Vec<u8>),
    /// Present, longer than [`CAPTURE_LIMIT`].
    TooLarge,
}

impl Captured {
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Captured::Value(v) => Some(v),
            _ => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("not JSON at byte {0}")]
    Syntax(u64),
    #[error("the JSON document ends early (after {0} bytes)")]
    Truncated(u64),
}

/// What a finished scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// The document is an object (the chosen paths can only be in one).
    pub object: bool,
    captured: Vec<Captured>,
}

impl Scanned {
    /// The value at `paths[index]`.
    pub fn get(&self, index: usize) -> &Captured {
        self.captured.get(index).unwrap_or(&Captured::Absent)
    }
}

/// What an object on a chosen path expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// After `{`.
    KeyOrEnd,
    /// After `,`.
    Key,
    Colon,
    Value,
    CommaOrEnd,
}

/// An object on the way to a chosen path.
#[derive(Debug)]
struct Frame {
    /// The paths that go through this object.
    paths: u32,
    /// How many keys lead to it (0: the document).
    depth: usize,
    expect: Expect,
    /// Set by the last key: the path whose value comes next, and the paths that go on
    /// below it.
    target: Option<usize>,
    below: u32,
}

/// A value being skipped (and kept, when chosen).
#[derive(Debug)]
struct Skip {
    target: Option<usize>,
    kept: Vec<u8>,
    too_large: bool,
    /// Open brackets; 0 in a string or a scalar at the top of the skipped value.
    depth: u64,
    in_string: bool,
    escaped: bool,
    /// A number or literal: ends before the first delimiter, which is not its own.
    scalar: bool,
}

#[derive(Debug)]
enum Mode {
    /// Before the document's first byte.
    Start,
    /// In an object on a chosen path (the top frame).
    Object,
    /// Reading a key of the top frame.
    Key {
        raw: Vec<u8>,
        escaped: bool,
        long: bool,
        backslash: bool,
    },
    Skip(Skip),
    /// After the document: only whitespace may follow.
    Done,
    Failed,
}

/// The scanner: feed it with [`Scanner::push`], then [`Scanner::finish`].
#[derive(Debug)]
pub struct Scanner {
    paths: Paths,
    frames: Vec<Frame>,
    mode: Mode,
    captured: Vec<Captured>,
    object: bool,
    /// Bytes read before the current chunk, and the offset in it of the current step.
    read: u64,
    at: usize,
    error_at: Option<u64>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Scanner {
    pub fn new(paths: Paths) -> Self {
        Self {
            paths,
            frames: Vec::new(),
            mode: Mode::Start,
            captured: vec![Captured::Absent; paths.len()],
            object: false,
            read: 0,
            at: 0,
            error_at: None,
        }
    }

    /// Bytes read so far.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// Bytes held: the chosen values kept so far (what the scan costs beyond its own size).
    pub fn held(&self) -> usize {
        let kept: usize = self.captured.iter().map(|c| c.value().map_or(0, <[u8]>::len)).sum();
        match &self.mode {
            Mode::Skip(skip) => kept + skip.kept.capacity(),
            _ => kept,
        }
    }

    /// Reads the next bytes of the document.
    pub fn push(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            self.at = i;
            i += self.step(&bytes[i..]);
        }
        self.read += bytes.len() as u64;
    }

    /// What was found, or why the document is not one.
    pub fn finish(self) -> Result<Scanned, ScanError> {
        if let Some(at) = self.error_at {
            return Err(ScanError::Syntax(at));
        }
        match self.mode {
            Mode::Done => Ok(Scanned { object: self.object, captured: self.captured }),
            // A number or literal that ends the document ends with it.
            Mode::Skip(Skip { scalar: true, target: None, .. }) if self.frames.is_empty() => {
                Ok(Scanned { object: false, captured: self.captured })
            }
            _ => Err(ScanError::Truncated(self.read)),
        }
    }

    /// Stops at a syntax error in the first byte of the current step.
    fn fail(&mut self) -> usize {
        self.error_at = Some(self.read + self.at as u64);
        self.mode = Mode::Failed;
        usize::MAX / 2
    }

    /// Consumes some of `bytes` (at least one) and returns how many.
    fn step(&mut self, bytes: &[u8]) -> usize {
        match &mut self.mode {
            Mode::Failed => bytes.len(),
            Mode::Done => match bytes.iter().position(|b| !is_space(*b)) {
                None => bytes.len(),
                Some(at) => {
                    self.at += at;
                    self.fail()
                }
            },
            Mode::Start => {
                let b = bytes[0];
                if is_space(b) {
                    return 1;
                }
                if b == b'{' && !self.paths.is_empty() {
                    self.object = true;
                    let all = if self.paths.len() >= 32 { u32::MAX } else { (1u32 << self.paths.len()) - 1 };
                    self.push_frame(all, 0);
                    return 1;
                }
                self.object = b == b'{';
                self.begin_skip(None, b)
            }
            Mode::Key { .. } => self.step_key(bytes),
            Mode::Skip(_) => self.step_skip(bytes),
            Mode::Object => self.step_object(bytes[0]),
        }
    }

    fn push_frame(&mut self, paths: u32, depth: usize) {
        self.frames.push(Frame { paths, depth, expect: Expect::KeyOrEnd, target: None, below: 0 });
        self.mode = Mode::Object;
    }

    /// The top frame's object ended, or a value in it did.
    fn value_done(&mut self) {
        match self.frames.last_mut() {
            Some(frame) => {
                frame.expect = Expect::CommaOrEnd;
                self.mode = Mode::Object;
            }
            None => self.mode = Mode::Done,
        }
    }

    fn step_object(&mut self, b: u8) -> usize {
        if is_space(b) {
            return 1;
        }
        let Some(frame) = self.frames.last_mut() else { return self.fail() };
        match (frame.expect, b) {
            (Expect::KeyOrEnd | Expect::Key, b'"') => {
                self.mode = Mode::Key { raw: Vec::new(), escaped: false, long: false, backslash: false };
                1
            }
            (Expect::KeyOrEnd | Expect::CommaOrEnd, b'}') => {
                self.frames.pop();
                self.value_done();
                1
            }
            (Expect::Colon, b':') => {
                frame.expect = Expect::Value;
                1
            }
            (Expect::CommaOrEnd, b',') => {
                frame.expect = Expect::Key;
                1
            }
            (Expect::Value, _) => {
                let (target, below, depth) = (frame.target, frame.below, frame.depth);
                if b == b'{' && below != 0 && target.is_none() {
                    self.push_frame(below, depth + 1);
                    return 1;
                }
                self.begin_skip(target, b)
            }
            _ => self.fail(),
        }
    }

    fn step_key(&mut self, bytes: &[u8]) -> usize {
        let Mode::Key { raw, escaped, long, backslash } = &mut self.mode else { return self.fail() };
        for (i, &b) in bytes.iter().enumerate() {
            if *escaped {
                *escaped = false;
            } else if b == b'\\' {
                (*escaped, *backslash) = (true, true);
            } else if b == b'"' {
                let key = std::mem::take(raw);
                let (long, backslash) = (*long, *backslash);
                self.key_done(&key, long, backslash);
                return i + 1;
            }
            if raw.len() < KEY_LIMIT {
                raw.push(b);
            } else {
                *long = true;
            }
        }
        bytes.len()
    }

    /// A key of the top frame was read: which chosen paths its value is on.
    fn key_done(&mut self, raw: &[u8], long: bool, backslash: bool) {
        let decoded;
        let key: Option<&[u8]> = match (long, backslash) {
            (true, _) => None,
            (false, false) => Some(raw),
            (false, true) => {
                let mut quoted = Vec::with_capacity(raw.len() + 2);
                quoted.push(b'"');
                quoted.extend_from_slice(raw);
                quoted.push(b'"');
                decoded = serde_json::from_slice::<String>(&quoted).ok();
                decoded.as_deref().map(str::as_bytes)
            }
        };
        let paths = self.paths;
        let Some(frame) = self.frames.last_mut() else { return };
        let (mut target, mut below) = (None, 0u32);
        for (index, path) in paths.iter().enumerate() {
            let on = frame.paths & (1 << index) != 0;
            if !on || path.get(frame.depth).map(|k| k.as_bytes()) != key {
                continue;
            }
            if path.len() == frame.depth + 1 {
                target = target.or(Some(index));
            } else {
                below |= 1 << index;
            }
        }
        (frame.target, frame.below, frame.expect) = (target, below, Expect::Colon);
        self.mode = Mode::Object;
    }

    /// A value that is skipped (kept when `target` is set) starts with `b`.
    fn begin_skip(&mut self, target: Option<usize>, b: u8) -> usize {
        let (depth, in_string, scalar) = match b {
            b'{' | b'[' => (1, false, false),
            b'"' => (0, true, false),
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => (0, false, true),
            _ => return self.fail(),
        };
        let mut kept = Vec::new();
        if target.is_some() {
            kept.push(b);
        }
        self.mode = Mode::Skip(Skip { target, kept, too_large: false, depth, in_string, escaped: false, scalar });
        1
    }

    fn step_skip(&mut self, bytes: &[u8]) -> usize {
        let Mode::Skip(skip) = &mut self.mode else { return 0 };
        let (used, ended) = skip_run(skip, bytes);
        if skip.target.is_some() && !skip.too_large {
            if skip.kept.len() + used > CAPTURE_LIMIT {
                skip.too_large = true;
                skip.kept = Vec::new();
            } else {
                skip.kept.extend_from_slice(&bytes[..used]);
            }
        }
        if !ended {
            return used.max(1).min(bytes.len());
        }
        let Mode::Skip(skip) = std::mem::replace(&mut self.mode, Mode::Object) else { return used };
        if let Some(index) = skip.target {
            self.captured[index] = if skip.too_large { Captured::TooLarge } else { Captured::Value(skip.kept) };
        }
        self.value_done();
        // The delimiter that ends a scalar is not its own: it is read again in the new
        // mode (so 0 here cannot loop).
        used
    }
}

/// Advances a skipped value over `bytes`: how many bytes are its own, and whether it ended.
fn skip_run(skip: &mut Skip, bytes: &[u8]) -> (usize, bool) {
    let mut i = 0;
    if skip.scalar {
        while i < bytes.len() {
            let b = bytes[i];
            if is_space(b) || matches!(b, b',' | b'}' | b']') {
                return (i, true);
            }
            i += 1;
        }
        return (i, false);
    }
    while i < bytes.len() {
        if skip.in_string {
            // Long strings (base64 images, generated text) go by in one search.
            match bytes[i..].iter().position(|b| *b == b'"' || *b == b'\\' || skip.escaped) {
                None => return (bytes.len(), false),
                Some(at) => i += at,
            }
            let b = bytes[i];
            i += 1;
            if skip.escaped {
                skip.escaped = false;
            } else if b == b'\\' {
                skip.escaped = true;
            } else {
                skip.in_string = false;
                if skip.depth == 0 {
                    return (i, true);
                }
            }
            continue;
        }
        let b = bytes[i];
        i += 1;
        match b {
            b'"' => skip.in_string = true,
            b'{' | b'[' => skip.depth += 1,
            b'}' | b']' => {
                skip.depth -= 1;
                if skip.depth == 0 {
                    return (i, true);
                }
            }
            _ => {}
        }
    }
    (i, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: Paths = &[&["model"], &["usage"], &["response", "usage"], &["response", "model"]];

    fn scan_in(doc: &[u8], pieces: usize) -> Result<Scanned, ScanError> {
        let mut scanner = Scanner::new(PATHS);
        let size = doc.len().div_ceil(pieces.max(1)).max(1);
        for chunk in doc.chunks(size) {
            scanner.push(chunk);
        }
        scanner.finish()
    }

    fn scan(doc: &str) -> Result<Scanned, ScanError> {
        let whole = scan_in(doc.as_bytes(), 1);
        // Cut anywhere, the same result: one byte at a time, and in 3 and 7 pieces.
        for pieces in [doc.len(), 3, 7] {
            assert_eq!(scan_in(doc.as_bytes(), pieces), whole, "{doc} in {pieces} pieces");
        }
        whole
    }

    fn text(c: &Captured) -> Option<&str> {
        c.value().map(|v| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn chosen_values_are_kept_verbatim_and_the_rest_skipped() {
        let doc = r#" {"id":"x","data":[{"embedding":[0.1,-2e-3,{"a":"]}"}]}],"model":"m\"1",
            "response":{"output":[[["deep"]]],"usage":{"input_tokens":5,"d":{"x":[1,2]}},"model":null},
            "usage" : { "prompt_tokens" : 7 } , "n": true, "f": -1.5e+3 } "#;
        let s = scan(doc).unwrap();
        assert!(s.object);
        assert_eq!(text(s.get(0)), Some(r#""m\"1""#));
        assert_eq!(text(s.get(1)), Some(r#"{ "prompt_tokens" : 7 }"#));
        assert_eq!(text(s.get(2)), Some(r#"{"input_tokens":5,"d":{"x":[1,2]}}"#));
        assert_eq!(text(s.get(3)), Some("null"));
        assert_eq!(s.get(9), &Captured::Absent);
    }

    #[test]
    fn scalars_keys_with_escapes_and_the_last_of_duplicates() {
        let s = scan(r#"{"usage":1,"\u006dodel":12.5,"usage":{"a":2}}"#).unwrap();
        assert_eq!(text(s.get(0)), Some("12.5"));
        assert_eq!(text(s.get(1)), Some(r#"{"a":2}"#));
        // A chosen key below a non-object is not followed; one at the wrong depth not taken.
        let s = scan(r#"{"response":[{"usage":1}],"x":{"usage":2},"model":true}"#).unwrap();
        assert_eq!((s.get(1), s.get(2)), (&Captured::Absent, &Captured::Absent));
        assert_eq!(text(s.get(0)), Some("true"));
    }

    #[test]
    fn documents_that_are_not_objects_have_nothing_chosen() {
        for doc in ["[1,2]", "\"a string\"", "null", "17", " [[[]]] "] {
            let s = scan(doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert!(!s.object && s.get(0) == &Captured::Absent, "{doc}");
        }
    }

    #[test]
    fn cut_or_malformed_documents_are_errors() {
        for doc in [r#"{"id": "x", "usage": {"#, r#"{"usage":{"a":1}"#, "", "  ", "[1,", r#"{"a":"#, r#"{"a":"b"#] {
            assert!(matches!(scan(doc), Err(ScanError::Truncated(_))), "{doc}");
        }
        for doc in [r#"{"a" 1}"#, r#"{"a":1}}"#, r#"{"a":1} x"#, "{x}", r#"{"a":1,}"#, "}"] {
            assert!(matches!(scan(doc), Err(ScanError::Syntax(_))), "{doc}: {:?}", scan(doc));
        }
    }

    #[test]
    fn huge_skipped_values_cost_nothing_and_huge_chosen_ones_are_too_large() {
        let zeros = format!(r#"{{"data":[{}0],"usage":{{"prompt_tokens":3}}}}"#, "0,".repeat(4 << 20));
        let mut scanner = Scanner::new(PATHS);
        let mut most = 0;
        for chunk in zeros.as_bytes().chunks(16 * 1024) {
            scanner.push(chunk);
            most = most.max(scanner.held());
        }
        assert_eq!(most, r#"{"prompt_tokens":3}"#.len(), "nothing held but the usage");
        assert_eq!(text(scanner.finish().unwrap().get(1)), Some(r#"{"prompt_tokens":3}"#));
        let deep = format!(r#"{{"x":{}{},"model":"m"}}"#, "[".repeat(1 << 20), "]".repeat(1 << 20));
        assert_eq!(text(scan_in(deep.as_bytes(), 64).unwrap().get(0)), Some(r#""m""#));
        let big = format!(r#"{{"usage":"{}"}}"#, "a".repeat(CAPTURE_LIMIT));
        assert_eq!(scan_in(big.as_bytes(), 5).unwrap().get(1), &Captured::TooLarge);
    }
}
