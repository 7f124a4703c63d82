//! Reading manifests: files, directories (recursively), stdin; multi-document
//! YAML, JSON, and `List` objects, each document with the line it starts on.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

/// One object from the input, with where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// File name as given (or `<stdin>`).
    pub file: Arc<str>,
    /// 1-based line of the object's first line.
    pub line: usize,
    /// The text of the YAML document holding the object (a whole `List` for its items).
    pub text: Arc<str>,
    /// 1-based line of the first line of `text`.
    pub text_line: usize,
    pub value: Value,
}

/// Input that could not be read or parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadError {
    pub file: Arc<str>,
    pub line: usize,
    pub message: String,
}

/// Name the input read from standard input is reported under.
pub const STDIN: &str = "<stdin>";

/// Reads every input: `-` is stdin, a directory is walked for `*.yaml`,
/// `*.yml` and `*.json` files (hidden entries skipped), a file is read whatever its name.
/// Files are read and parsed on all cores; the result keeps the input order.
pub fn read_all(inputs: &[String]) -> (Vec<Document>, Vec<ReadError>) {
    let (sources, mut errors) = collect_sources(inputs);
    let texts: Vec<Result<Text, ReadError>> = super::map_all(&sources, Source::read);
    let mut items = Vec::new();
    for text in &texts {
        match text {
            Ok(text) => text.items(&mut items),
            Err(error) => items.push(Item::Failed(error.clone())),
        }
    }
    let batches: Vec<&[Item]> = items.chunks(BATCH).collect();
    let parsed: Vec<(Vec<Document>, Vec<ReadError>)> = super::map_all(&batches, |batch| parse_items(batch));
    let mut documents = Vec::new();
    for (docs, errs) in parsed {
        documents.extend(docs);
        errors.extend(errs);
    }
    (documents, errors)
}

/// YAML documents parsed as one stream: one parser (and its buffers) per batch
/// instead of per document, which is most of the cost of small manifests.
const BATCH: usize = 256;

fn collect_sources(inputs: &[String]) -> (Vec<Source>, Vec<ReadError>) {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        if input == "-" {
            sources.push(Source::Stdin);
            continue;
        }
        let path = PathBuf::from(input);
        if path.is_dir() {
            let mut files = Vec::new();
            if let Err(e) = collect_dir(&path, &mut files) {
                errors.push(ReadError { file: input.as_str().into(), line: 0, message: format!("cannot read: {e}") });
            }
            sources.extend(files.into_iter().map(Source::File));
        } else {
            sources.push(Source::File(path));
        }
    }
    (sources, errors)
}

enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    fn read(&self) -> Result<Text, ReadError> {
        let (file, read): (Arc<str>, _) = match self {
            Source::Stdin => {
                let mut text = String::new();
                (STDIN.into(), std::io::stdin().read_to_string(&mut text).map(|_| text))
            }
            Source::File(path) => (path.display().to_string().into(), std::fs::read_to_string(path)),
        };
        let json = matches!(self, Source::File(path) if path.extension().is_some_and(|e| e == "json"));
        match read {
            Ok(text) => Ok(Text { file, text, json }),
            Err(e) => Err(ReadError { file, line: 0, message: format!("cannot read: {e}") }),
        }
    }
}

/// One input's text.
struct Text {
    file: Arc<str>,
    text: String,
    json: bool,
}

impl Text {
    fn items<'a>(&'a self, out: &mut Vec<Item<'a>>) {
        if self.json {
            out.push(Item::Json(self));
            return;
        }
        out.extend(pieces(&self.file, &self.text).map(Item::Yaml));
    }
}

/// What is parsed, in input order.
enum Item<'a> {
    Yaml(Piece<'a>),
    Json(&'a Text),
    Failed(ReadError),
}

/// One YAML document of a file: (first line, first content line), text.
struct Piece<'a> {
    file: &'a Arc<str>,
    lines: (usize, usize),
    text: &'a str,
}

/// The YAML documents of one file's text.
fn pieces<'a>(file: &'a Arc<str>, text: &'a str) -> impl Iterator<Item = Piece<'a>> {
    let documents = split_documents(text).into_iter();
    documents.map(move |(first_line, content_line, text)| Piece { file, lines: (first_line, content_line), text })
}

fn parse_items(items: &[Item<'_>]) -> (Vec<Document>, Vec<ReadError>) {
    let pieces: Vec<&Piece> = items.iter().filter_map(|i| if let Item::Yaml(p) = i { Some(p) } else { None }).collect();
    let mut parsed = parse_yaml(&pieces).into_iter();
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for item in items {
        match item {
            Item::Yaml(piece) => match parsed.next() {
                Some(result) => yaml_document(piece, result, &mut documents, &mut errors),
                None => errors.push(ReadError {
                    file: piece.file.clone(),
                    line: piece.lines.1,
                    message: "invalid YAML: document lost while parsing".into(),
                }),
            },
            Item::Json(text) => parse_text(text.file.clone(), &text.text, true, &mut documents, &mut errors),
            Item::Failed(error) => errors.push(error.clone()),
        }
    }
    (documents, errors)
}

/// Each piece's value, in order. The pieces are parsed as one stream; if that
/// fails anywhere, each alone, so an error is reported against its own document.
fn parse_yaml(pieces: &[&Piece<'_>]) -> Vec<Result<Value, serde_yaml::Error>> {
    if pieces.len() > 1 {
        let mut stream = String::with_capacity(pieces.iter().map(|p| p.text.len() + 5).sum());
        for piece in pieces {
            stream.push_str("---\n");
            stream.push_str(piece.text);
            if !piece.text.ends_with('\n') {
                stream.push('\n');
            }
        }
        let values: Result<Vec<Value>, _> =
            serde_yaml::Deserializer::from_str(&stream).map(Value::deserialize).collect();
        if let Ok(values) = values
            && values.len() == pieces.len()
        {
            return values.into_iter().map(Ok).collect();
        }
    }
    pieces.iter().map(|piece| serde_yaml::from_str::<Value>(piece.text)).collect()
}

fn yaml_document(
    piece: &Piece<'_>,
    result: Result<Value, serde_yaml::Error>,
    out: &mut Vec<Document>,
    errors: &mut Vec<ReadError>,
) {
    let (first_line, content_line) = piece.lines;
    match result {
        Ok(Value::Null) => {}
        Ok(value) => push_object(piece.file.clone(), piece.lines, piece.text.into(), value, out),
        Err(e) => {
            let line = e.location().map(|l| first_line + l.line() - 1).unwrap_or(content_line);
            errors.push(ReadError { file: piece.file.clone(), line, message: format!("invalid YAML: {e}") });
        }
    }
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_dir(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses one file's text into documents.
pub fn parse_text(file: Arc<str>, text: &str, json: bool, out: &mut Vec<Document>, errors: &mut Vec<ReadError>) {
    if json {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => push_object(file, (1, 1), text.into(), value, out),
            Err(e) => errors.push(ReadError { file, line: e.line(), message: format!("invalid JSON: {e}") }),
        }
        return;
    }
    let items: Vec<Item> = pieces(&file, text).map(Item::Yaml).collect();
    let (documents, failed) = parse_items(&items);
    out.extend(documents);
    errors.extend(failed);
}

fn push_object(file: Arc<str>, lines: (usize, usize), text: Arc<str>, value: Value, out: &mut Vec<Document>) {
    let (text_line, line) = lines;
    let is_list = value.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if !is_list {
        out.push(Document { file, line, text, text_line, value });
        return;
    }
    if let Some(Value::Array(items)) = value.get("items") {
        for item in items {
            let line = item_line(&text, text_line, item).unwrap_or(line);
            out.push(Document { file: file.clone(), line, text: text.clone(), text_line, value: item.clone() });
        }
    }
}

/// The line of a `List` item: where its `name: <name>` appears.
fn item_line(text: &str, text_line: usize, item: &Value) -> Option<usize> {
    let name = item.pointer("/metadata/name").and_then(Value::as_str)?;
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim();
            t == format!("name: {name}")
                || t == format!("\"name\": \"{name}\"")
                || t == format!("\"name\": \"{name}\",")
        })
        .map(|i| text_line + i)
}

/// Splits a YAML stream at `---` lines; yields (first line, first content line, text) per document.
fn split_documents(text: &str) -> Vec<(usize, usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        let separator = trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "...";
        if separator {
            docs.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = index + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs.into_iter()
        .filter_map(|(first, doc)| {
            let skip = doc.lines().position(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            })?;
            Some((first, first + skip, doc))
        })
        .collect()
}

/// The line of the field at `fields` (names from the root) in a document,
/// found by searching the text for each key in turn after the previous one;
/// the document's line when the first key is not found.
pub fn locate(document: &Document, fields: &[String]) -> usize {
    if fields.is_empty() {
        return document.line;
    }
    let lines: Vec<&str> = document.text.lines().collect();
    let base = document.text_line;
    let mut from = document.line.saturating_sub(base);
    let mut found = document.line;
    for field in fields {
        let yaml_key = format!("{field}:");
        let json_key = format!("\"{field}\"");
        let hit = lines.iter().enumerate().skip(from).find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.starts_with(&yaml_key) || t.starts_with(&json_key)
        });
        match hit {
            Some((index, _)) => {
                found = base + index;
                from = index + 1;
            }
            None => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Document>, Vec<ReadError>) {
        let mut docs = Vec::new();
        let mut errors = Vec::new();
        parse_text("t.yaml".into(), text, false, &mut docs, &mut errors);
        (docs, errors)
    }

    #[test]
    fn documents_carry_their_first_content_line() {
        let (docs, errors) = parse("# c\nkind: A\n---\n\n# x\nkind: B\nspec:\n  a: 1\n---\n");
        assert!(errors.is_empty());
        assert_eq!(docs.iter().map(|d| d.line).collect::<Vec<_>>(), vec![2, 6]);
        assert_eq!(locate(&docs[1], &["spec".into(), "a".into()]), 8);
        assert_eq!(locate(&docs[1], &["spec".into(), "zzz".into()]), 7);
    }

    #[test]
    fn files_parsed_in_one_stream_keep_their_order_and_errors() {
        let dir = std::env::temp_dir().join(format!("payi-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..5 {
            let text = if i == 3 { "kind: [\n".to_string() } else { format!("kind: K{i}\n---\n# only a comment\n") };
            std::fs::write(dir.join(format!("{i}.yaml")), text).unwrap();
        }
        std::fs::write(dir.join("5.json"), r#"{"kind": "J"}"#).unwrap();
        let (docs, errors) = read_all(&[dir.display().to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d.value["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["K0", "K1", "K2", "K4", "J"]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].file.ends_with("3.yaml") && errors[0].line == 2, "{errors:?}");
    }

    #[test]
    fn lists_are_expanded_and_errors_have_lines() {
        let text = "kind: List\nitems:\n- kind: A\n  metadata:\n    name: one\n- kind: B\n  metadata:\n    name: two\n";
        let (docs, _) = parse(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].line, 8);
        let (docs, errors) = parse("kind: A\n---\nkind: [\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(errors[0].line, 4, "{errors:?}");
    }
}
