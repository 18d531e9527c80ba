//! The first step of `config::load`: the file's YAML documents (read with serde-saphyr)
//! as a tree of nodes that remember their line and column, and a serde `Deserializer`
//! over that tree which tracks the field path (`spec.servers[0].tls`) of everything it
//! hands out. The raw `File*` types of `file.rs` are deserialized through it, so every
//! type error, missing field, unknown field and unimplemented Istio field is reported
//! with its path and position, and unknown fields do not stop the rest of the document
//! from being checked.

use std::cell::RefCell;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde_saphyr::Spanned;

use super::error::Problem;

/// Largest configuration text ringress parses (bytes). Istio manifests for an ingress
/// are a few kilobytes; anything near this is a mistake (a log file, a binary).
pub(crate) const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;

/// Deepest nesting of mappings and lists accepted. The deepest Istio field ringress reads
/// (`spec.http[].match[].headers.NAME.exact`) is at depth 7; the limit keeps the
/// recursive reading of the tree far from the end of the stack.
pub(crate) const MAX_NESTING_DEPTH: usize = 24;

/// A YAML node with the position (1-based line and column) it was written at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) line: u64,
    pub(crate) column: u64,
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) line: u64,
    pub(crate) column: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in the order written.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// How the value is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Int(i) => format!("integer {i}"),
            Value::Float(x) => format!("number {x}"),
            Value::Str(s) => format!("string {s:?}"),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }
}

impl Node {
    /// The entry `name` of a mapping node.
    pub(crate) fn get(&self, name: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Position of the node at `path`, or of the deepest part of `path` that exists (for
    /// a missing field: its parent). A path ending in a key gives the key's position.
    pub(crate) fn locate(&self, path: &Path) -> (u64, u64) {
        let mut node = self;
        let mut at = (self.line, self.column);
        for seg in &path.0 {
            let next = match (seg, &node.value) {
                (Seg::Key(name), Value::Map(entries)) => entries
                    .iter()
                    .find(|(k, _)| &k.name == name)
                    .map(|(k, v)| ((k.line, k.column), v)),
                (Seg::Index(i), Value::Seq(items)) => {
                    items.get(*i).map(|v| ((v.line, v.column), v))
                }
                _ => None,
            };
            match next {
                Some((pos, child)) => {
                    at = pos;
                    node = child;
                }
                None => break,
            }
        }
        at
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            value: spanned.value,
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let name = match key.value {
                Value::Str(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Int(i) => i.to_string(),
                Value::Float(x) => x.to_string(),
                other => {
                    return Err(de::Error::custom(format!(
                        "mapping keys must be strings, found {} at line {} column {}",
                        other.describe(),
                        key.line,
                        key.column
                    )));
                }
            };
            let value = map.next_value::<Node>()?;
            entries.push((
                Key {
                    name,
                    line: key.line,
                    column: key.column,
                },
                value,
            ));
        }
        Ok(Value::Map(entries))
    }
}

/// One YAML document of the file.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    /// 1-based index among the file's documents, counting empty ones.
    pub(crate) index: usize,
    pub(crate) root: Node,
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) message: String,
    pub(crate) line: Option<(u64, u64)>,
    /// The document the error is in, when its line is known.
    pub(crate) document: Option<usize>,
}

/// Reads every document of `text`. Empty documents (`---` alone, comments only) are
/// skipped but still counted, so document numbers match what the user sees.
pub(crate) fn documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(SyntaxError {
            message: format!(
                "the file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                text.len()
            ),
            line: None,
            document: None,
        });
    }
    let markers = DocumentMarkers::scan(text);
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_NESTING_DEPTH,
        },
    };
    let roots: Vec<Node> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
            let line = e.location().map(|l| (l.line(), l.column()));
            let message = clean_message(&e.without_snippet().to_string());
            SyntaxError {
                message,
                line,
                document: line.map(|(l, _)| markers.document_at(l)),
            }
        })?;
    Ok(roots
        .into_iter()
        .map(|root| Document {
            index: markers.document_at(root.line),
            root,
        })
        .collect())
}

/// serde-saphyr appends " at line L column C" to its messages (ringress prints the
/// position in front, as `file:line:column`) and sometimes advice for Rust callers.
fn clean_message(message: &str) -> String {
    let m = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
    let m = m
        .split_once(", set DuplicateKeyPolicy")
        .map_or(m, |(m, _)| m);
    m.to_owned()
}

/// Where the `---` document markers of a file are, to number documents by line.
struct DocumentMarkers {
    /// Lines (1-based) that start with `---`.
    lines: Vec<u64>,
    /// Whether there is content before the first marker (an implicit first document).
    implicit_first: bool,
}

impl DocumentMarkers {
    fn scan(text: &str) -> Self {
        let mut lines = Vec::new();
        let mut implicit_first = false;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, line) in text.lines().enumerate() {
            let is_marker = line
                .strip_prefix("---")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
            if is_marker {
                lines.push(i as u64 + 1);
            } else if lines.is_empty() {
                let t = line.trim();
                if !(t.is_empty() || t.starts_with('#') || t.starts_with('%')) {
                    implicit_first = true;
                }
            }
        }
        DocumentMarkers {
            lines,
            implicit_first,
        }
    }

    /// The 1-based document a node on `line` belongs to.
    fn document_at(&self, line: u64) -> usize {
        let before = self.lines.iter().filter(|&&m| m <= line).count();
        (before + usize::from(self.implicit_first)).max(1)
    }
}

/// A field path inside a document: `spec.servers[0].tls.mode`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Path(pub Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

impl Path {
    pub(crate) fn key(&self, name: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(name.to_owned()));
        p
    }
    pub(crate) fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// How a raw struct treats mapping keys that are not among its fields.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FieldPolicy {
    /// Istio fields accepted and ignored (`selector`, `labels`, `exportTo`).
    pub(crate) ignored: &'static [&'static str],
    /// Istio fields ringress knows but does not implement yet.
    pub(crate) not_implemented: &'static [&'static str],
}

/// Shared state of one document's deserialization: the policy per raw struct name and
/// the problems found so far that did not stop deserialization (unknown fields).
pub(crate) struct Ctx {
    policy: fn(&str) -> FieldPolicy,
    pub(crate) issues: RefCell<Vec<(Path, Problem)>>,
}

impl Ctx {
    pub(crate) fn new(policy: fn(&str) -> FieldPolicy) -> Self {
        Ctx {
            policy,
            issues: RefCell::new(Vec::new()),
        }
    }
}

/// A problem that stopped deserialization of one node, with where it happened.
#[derive(Debug)]
pub(crate) struct DeError {
    pub(crate) path: Option<Path>,
    /// Set by `missing_field`: the path gets this field appended when it is attached.
    missing: Option<&'static str>,
    pub(crate) problem: Problem,
}

impl DeError {
    fn new(problem: Problem) -> Self {
        DeError {
            path: None,
            missing: None,
            problem,
        }
    }

    /// Attaches `path` if no deeper deserializer has done so.
    fn at(mut self, path: &Path) -> Self {
        if self.path.is_none() {
            let mut p = path.clone();
            if let Some(field) = self.missing.take() {
                p.0.push(Seg::Key(field.to_owned()));
            }
            self.path = Some(p);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{p}: {}", self.problem),
            None => write!(f, "{}", self.problem),
        }
    }
}

impl std::error::Error for DeError {}

/// Rust type names in serde's "expected" texts, in the words of a YAML author.
fn humanize_expected(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" => {
            "an integer".to_owned()
        }
        "f32" | "f64" => "a number".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        other if other.starts_with("struct ") => "a mapping".to_owned(),
        other => other.to_owned(),
    }
}

fn describe_unexpected(u: de::Unexpected<'_>) -> String {
    match u {
        de::Unexpected::Bool(b) => format!("boolean {b}"),
        de::Unexpected::Unsigned(n) => format!("integer {n}"),
        de::Unexpected::Signed(n) => format!("integer {n}"),
        de::Unexpected::Float(x) => format!("number {x}"),
        de::Unexpected::Str(s) => format!("string {s:?}"),
        de::Unexpected::Unit | de::Unexpected::Option => "null".to_owned(),
        de::Unexpected::Seq => "a list".to_owned(),
        de::Unexpected::Map => "a mapping".to_owned(),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Problem::Rule(msg.to_string()))
    }
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::WrongType {
            expected: humanize_expected(&exp.to_string()),
            found: describe_unexpected(unexp),
        })
    }
    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::InvalidValue {
            value: describe_unexpected(unexp),
            reason: format!("expected {}", humanize_expected(&exp.to_string())),
        })
    }
    fn missing_field(field: &'static str) -> Self {
        DeError {
            path: None,
            missing: Some(field),
            problem: Problem::Missing,
        }
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(Problem::UnknownField {
            field: field.to_owned(),
            accepted: expected.iter().map(|s| (*s).to_owned()).collect(),
        })
    }
}

/// Deserializes raw types from a [`Node`], tracking the path.
pub(crate) struct NodeDe<'a> {
    pub(crate) node: &'a Node,
    pub(crate) path: Path,
    pub(crate) ctx: &'a Ctx,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: Path) -> NodeDe<'a> {
        NodeDe {
            node,
            path,
            ctx: self.ctx,
        }
    }

    fn wrong_type(&self, expected: &str) -> DeError {
        DeError::new(Problem::WrongType {
            expected: expected.to_owned(),
            found: self.node.value.describe(),
        })
        .at(&self.path)
    }
}

struct SeqDe<'a> {
    parent: &'a NodeDe<'a>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, node)) => {
                let path = self.parent.path.index(i);
                seed.deserialize(self.parent.child(node, path)).map(Some)
            }
            None => Ok(None),
        }
    }
}

struct MapDe<'a> {
    parent: &'a NodeDe<'a>,
    entries: std::vec::IntoIter<&'a (Key, Node)>,
    value: Option<&'a (Key, Node)>,
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some(entry) => {
                self.value = Some(entry);
                let key: de::value::StrDeserializer<'_, DeError> =
                    entry.0.name.as_str().into_deserializer();
                seed.deserialize(key)
                    .map(Some)
                    .map_err(|e| e.at(&self.parent.path.key(&entry.0.name)))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some((key, node)) => {
                let path = self.parent.path.key(&key.name);
                seed.deserialize(self.parent.child(node, path))
            }
            None => Err(DeError::new(Problem::Rule(
                "internal: mapping value requested before its key".to_owned(),
            ))
            .at(&self.parent.path)),
        }
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(v) => visitor.visit_i64(v),
                Err(_) => visitor.visit_i128(*i),
            },
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                parent: &self,
                items: items.iter().enumerate(),
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                parent: &self,
                entries: entries.iter().collect::<Vec<_>>().into_iter(),
                value: None,
            }),
        };
        result.map_err(|e| e.at(&self.path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(&path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(_) => self.deserialize_any(visitor),
            _ => Err(self.wrong_type("a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(_) => self.deserialize_any(visitor),
            _ => Err(self.wrong_type("a mapping")),
        }
    }

    /// Mapping keys that are not fields of `name` are checked against its
    /// [`FieldPolicy`]: ignored, or recorded as "not implemented" / "unknown field" in
    /// the context, and in every case left out so the rest of the struct is still read.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Value::Map(entries) = &self.node.value else {
            return Err(self.wrong_type("a mapping"));
        };
        let policy = (self.ctx.policy)(name);
        let mut kept = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = entry.0.name.as_str();
            if fields.contains(&key) {
                kept.push(entry);
            } else if policy.ignored.contains(&key) {
                // Accepted for compatibility with Istio manifests; no effect in ringress.
            } else if policy.not_implemented.contains(&key) {
                self.ctx.issues.borrow_mut().push((
                    self.path.key(key),
                    Problem::FieldNotImplemented(key.to_owned()),
                ));
            } else {
                let mut accepted: Vec<String> = fields.iter().map(|s| (*s).to_owned()).collect();
                accepted.extend(policy.ignored.iter().map(|s| (*s).to_owned()));
                self.ctx.issues.borrow_mut().push((
                    self.path.key(key),
                    Problem::UnknownField {
                        field: key.to_owned(),
                        accepted,
                    },
                ));
            }
        }
        visitor
            .visit_map(MapDe {
                parent: &self,
                entries: kept.into_iter(),
                value: None,
            })
            .map_err(|e| e.at(&self.path))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        visitor.visit_newtype_struct(self).map_err(|e| e.at(&path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct enum identifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_remember_positions() {
        let docs = documents("a:\n  b: [1, x]\n").unwrap();
        assert_eq!(docs.len(), 1);
        let b = docs[0].root.get("a").unwrap().get("b").unwrap();
        assert_eq!((b.line, b.column), (2, 6));
        let Value::Seq(items) = &b.value else {
            panic!("not a list: {b:?}")
        };
        assert_eq!(items[0].value, Value::Int(1));
        assert_eq!(items[1].value, Value::Str("x".into()));
    }

    #[test]
    fn quoted_numbers_stay_strings() {
        let docs = documents("a: \"80\"\nb: 80\nc: ~\nd:\ne: 1.5\nf: true\n").unwrap();
        let r = &docs[0].root;
        assert_eq!(r.get("a").unwrap().value, Value::Str("80".into()));
        assert_eq!(r.get("b").unwrap().value, Value::Int(80));
        assert_eq!(r.get("c").unwrap().value, Value::Null);
        assert_eq!(r.get("d").unwrap().value, Value::Null);
        assert_eq!(r.get("e").unwrap().value, Value::Float(1.5));
        assert_eq!(r.get("f").unwrap().value, Value::Bool(true));
    }

    #[test]
    fn documents_are_numbered_counting_empty_ones() {
        let text = "# leading comment\n---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n";
        let docs = documents(text).unwrap();
        let idx: Vec<usize> = docs.iter().map(|d| d.index).collect();
        assert_eq!(idx, vec![1, 4]);

        let docs = documents("a: 1\n---\nb: 2\n...\n").unwrap();
        let idx: Vec<usize> = docs.iter().map(|d| d.index).collect();
        assert_eq!(idx, vec![1, 2]);

        assert!(documents("").unwrap().is_empty());
        assert!(documents("---\n---\n").unwrap().is_empty());
    }

    #[test]
    fn syntax_error_has_position_and_document() {
        let err = documents("a: 1\n---\nb: [1, 2\nc: 3\n").unwrap_err();
        assert_eq!(err.document, Some(2));
        assert!(err.line.is_some(), "{err:?}");
        assert!(!err.message.contains(" at line "), "{}", err.message);
    }

    #[test]
    fn locate_finds_keys_and_parents() {
        let docs = documents("spec:\n  servers:\n  - port:\n      number: 80\n").unwrap();
        let root = &docs[0].root;
        let p = Path::default()
            .key("spec")
            .key("servers")
            .index(0)
            .key("port");
        assert_eq!(root.locate(&p), (3, 5));
        assert_eq!(root.locate(&p.key("number")), (4, 7));
        assert_eq!(root.locate(&p.key("name")), (3, 5));
        assert_eq!(p.key("number").to_string(), "spec.servers[0].port.number");
    }
}
