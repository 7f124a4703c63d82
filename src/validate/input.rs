//! Reading manifests: files, directories (recursively), stdin; multi-document
//! YAML, JSON, and `List` objects, each document with the line it starts on.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
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
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        if input == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => sources.push(Source::Text(text)),
                Err(e) => errors.push(ReadError { file: STDIN.into(), line: 0, message: format!("cannot read: {e}") }),
            }
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
    let parsed: Vec<(Vec<Document>, Vec<ReadError>)> = sources.par_iter().map(parse_source).collect();
    let mut documents = Vec::new();
    for (docs, errs) in parsed {
        documents.extend(docs);
        errors.extend(errs);
    }
    (documents, errors)
}

enum Source {
    Text(String),
    File(PathBuf),
}

fn parse_source(source: &Source) -> (Vec<Document>, Vec<ReadError>) {
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    match source {
        Source::Text(text) => parse_text(STDIN.into(), text, false, &mut documents, &mut errors),
        Source::File(file) => {
            let name: Arc<str> = file.display().to_string().into();
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    let json = file.extension().is_some_and(|e| e == "json");
                    parse_text(name, &text, json, &mut documents, &mut errors);
                }
                Err(e) => errors.push(ReadError { file: name, line: 0, message: format!("cannot read: {e}") }),
            }
        }
    }
    (documents, errors)
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
    for (first_line, content_line, doc) in split_documents(text) {
        match serde_yaml::from_str::<Value>(doc) {
            Ok(Value::Null) => {}
            Ok(value) => push_object(file.clone(), (first_line, content_line), doc.into(), value, out),
            Err(e) => {
                let line = e.location().map(|l| first_line + l.line() - 1).unwrap_or(content_line);
                errors.push(ReadError { file: file.clone(), line, message: format!("invalid YAML: {e}") });
            }
        }
    }
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
