//! XML documents: each record key is read from / written to an element path below the
//! root element, or an attribute (`@name` as the last segment).
//!
//! ```toml
//! kind = "xml"
//! name = "branch-request"
//! root = "Request"
//! declaration = true        # default true: write <?xml version="1.0" encoding="UTF-8"?>
//! [[field]]
//! name = "version"
//! path = "@version"         # attribute of the root
//! [[field]]
//! name = "pan"
//! path = "Card/PAN"         # text of <Request><Card><PAN>
//! required = true
//! [[field]]
//! name = "card_type"
//! path = "Card/@type"       # attribute of <Card>
//! ```
//!
//! Decoding takes the first occurrence of each path, trims surrounding whitespace from
//! element text and resolves entity and character references; repeated elements (loops)
//! are not modelled. Element names are compared as written (prefix included).

use quick_xml::Reader;
use quick_xml::Writer;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::Deserialize;

use crate::error::{CodecError, Result};
use crate::formats::{check_kind, check_names, parse_spec, utf8};
use crate::record::Record;

const MAX_DEPTH: usize = 256;

/// One XML field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlField {
    /// Record key.
    pub name: String,
    /// `A/B/C` (element text) or `A/B/@attr` (attribute), relative to the root element.
    pub path: String,
    /// Whether the value must be present (decoding and encoding).
    #[serde(default)]
    pub required: bool,
}

/// An XML record format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlFormat {
    kind: String,
    /// Format name.
    pub name: String,
    /// Name of the root element.
    pub root: String,
    /// Whether to write an XML declaration.
    #[serde(default = "yes")]
    pub declaration: bool,
    /// Fields.
    #[serde(rename = "field")]
    pub fields: Vec<XmlField>,
    #[serde(skip)]
    paths: Vec<(Vec<String>, Option<String>)>,
}

fn yes() -> bool {
    true
}

fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':'))
}

/// Splits `A/B/@c` into (["A", "B"], Some("c")).
fn split_path(path: &str) -> Option<(Vec<String>, Option<String>)> {
    let mut elems = Vec::new();
    let mut attr = None;
    let segs: Vec<&str> = path.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        if let Some(a) = seg.strip_prefix('@') {
            if i + 1 != segs.len() || !valid_name(a) {
                return None;
            }
            attr = Some(a.to_owned());
        } else if valid_name(seg) {
            elems.push((*seg).to_owned());
        } else {
            return None;
        }
    }
    if elems.is_empty() && attr.is_none() {
        return None;
    }
    Some((elems, attr))
}

struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: Option<String>,
    children: Vec<Node>,
}

impl Node {
    fn new(name: &str) -> Self {
        Node {
            name: name.to_owned(),
            attrs: Vec::new(),
            text: None,
            children: Vec::new(),
        }
    }

    fn write(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        let mut start = BytesStart::new(self.name.as_str());
        for (k, v) in &self.attrs {
            start.push_attribute((k.as_str(), v.as_str()));
        }
        if self.text.is_none() && self.children.is_empty() {
            return w.write_event(Event::Empty(start));
        }
        w.write_event(Event::Start(start))?;
        if let Some(t) = &self.text {
            w.write_event(Event::Text(BytesText::new(t)))?;
        }
        for c in &self.children {
            c.write(w)?;
        }
        w.write_event(Event::End(BytesEnd::new(self.name.as_str())))
    }
}

fn xml_err(e: impl std::fmt::Display) -> CodecError {
    CodecError::BadXml {
        detail: e.to_string(),
    }
}

impl XmlFormat {
    /// Parses and validates a `kind = "xml"` spec.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self> {
        let mut f: XmlFormat = parse_spec(text, source_name)?;
        check_kind(&f.kind, "xml", source_name)?;
        check_names(
            &f.name,
            f.fields.iter().map(|x| x.name.as_str()),
            source_name,
        )?;
        if !valid_name(&f.root) {
            return Err(CodecError::spec(
                source_name,
                format!("root {:?} is not a valid element name", f.root),
            ));
        }
        let mut paths = Vec::with_capacity(f.fields.len());
        for field in &f.fields {
            let p = split_path(&field.path).ok_or_else(|| {
                CodecError::spec(
                    source_name,
                    format!(
                        "field {:?}: path {:?} must be element names separated by '/', optionally ending in @attribute",
                        field.name, field.path
                    ),
                )
            })?;
            if paths.contains(&p) {
                return Err(CodecError::spec(
                    source_name,
                    format!(
                        "field {:?}: path {:?} is used twice",
                        field.name, field.path
                    ),
                ));
            }
            paths.push(p);
        }
        f.paths = paths;
        Ok(f)
    }

    /// Decodes one XML document.
    pub fn decode(&self, bytes: &[u8]) -> Result<Record> {
        let text = utf8(bytes)?;
        let mut reader = Reader::from_str(text);
        let mut stack: Vec<String> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut values: Vec<Option<String>> = vec![None; self.fields.len()];
        let mut seen_root = false;
        loop {
            let ev = reader.read_event().map_err(xml_err)?;
            match ev {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let name = std::str::from_utf8(e.name().as_ref())
                        .map_err(xml_err)?
                        .to_owned();
                    if stack.is_empty() {
                        if seen_root {
                            return Err(xml_err("content after the root element"));
                        }
                        if name != self.root {
                            return Err(xml_err(format!(
                                "root element is <{name}>, expected <{}>",
                                self.root
                            )));
                        }
                        seen_root = true;
                    }
                    stack.push(name);
                    if stack.len() > MAX_DEPTH {
                        return Err(xml_err("elements nested too deeply"));
                    }
                    for attr in e.attributes() {
                        let attr = attr.map_err(xml_err)?;
                        let key = std::str::from_utf8(attr.key.as_ref()).map_err(xml_err)?;
                        for (i, (elems, a)) in self.paths.iter().enumerate() {
                            if values[i].is_none()
                                && a.as_deref() == Some(key)
                                && elems.as_slice() == &stack[1..]
                            {
                                values[i] =
                                    Some(attr.unescape_value().map_err(xml_err)?.into_owned());
                            }
                        }
                    }
                    texts.push(String::new());
                    if matches!(ev, Event::Empty(_)) {
                        self.end_element(&mut stack, &mut texts, &mut values);
                    }
                }
                Event::End(_) => self.end_element(&mut stack, &mut texts, &mut values),
                Event::Text(e) => {
                    if let Some(t) = texts.last_mut() {
                        t.push_str(&e.decode().map_err(xml_err)?);
                    } else if !e.decode().map_err(xml_err)?.trim().is_empty() {
                        return Err(xml_err("text outside the root element"));
                    }
                }
                Event::CData(e) => {
                    if let Some(t) = texts.last_mut() {
                        t.push_str(&e.decode().map_err(xml_err)?);
                    }
                }
                Event::GeneralRef(e) => {
                    let c = match e.resolve_char_ref().map_err(xml_err)? {
                        Some(c) => c.to_string(),
                        None => {
                            let name = e.decode().map_err(xml_err)?;
                            resolve_predefined_entity(&name)
                                .ok_or_else(|| xml_err(format!("unknown entity &{name};")))?
                                .to_owned()
                        }
                    };
                    if let Some(t) = texts.last_mut() {
                        t.push_str(&c);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !seen_root {
            return Err(xml_err(format!("no <{}> element", self.root)));
        }
        if !stack.is_empty() {
            return Err(xml_err("document ends inside an element"));
        }
        let mut rec = Record::new();
        for (f, v) in self.fields.iter().zip(values) {
            match v {
                Some(v) => {
                    rec.insert(f.name.clone(), v);
                }
                None if f.required => {
                    return Err(CodecError::record(format!(
                        "{}: missing required {:?}",
                        self.name, f.path
                    )));
                }
                None => {}
            }
        }
        Ok(rec)
    }

    fn end_element(
        &self,
        stack: &mut Vec<String>,
        texts: &mut Vec<String>,
        values: &mut [Option<String>],
    ) {
        let text = texts.pop().unwrap_or_default();
        if !stack.is_empty() {
            for (i, (elems, a)) in self.paths.iter().enumerate() {
                if values[i].is_none() && a.is_none() && elems.as_slice() == &stack[1..] {
                    values[i] = Some(text.trim().to_owned());
                }
            }
        }
        stack.pop();
    }

    /// Encodes one record as an XML document.
    pub fn encode(&self, record: &Record) -> Result<Vec<u8>> {
        let mut root = Node::new(&self.root);
        for (f, (elems, attr)) in self.fields.iter().zip(&self.paths) {
            let Some(v) = record.get(&f.name) else {
                if f.required {
                    return Err(CodecError::record(format!(
                        "{}: missing required field {:?}",
                        self.name, f.name
                    )));
                }
                continue;
            };
            let mut node = &mut root;
            for e in elems {
                let idx = match node.children.iter().position(|c| &c.name == e) {
                    Some(i) => i,
                    None => {
                        node.children.push(Node::new(e));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[idx];
            }
            match attr {
                Some(a) => node.attrs.push((a.clone(), v.to_owned())),
                None => node.text = Some(v.to_owned()),
            }
        }
        let mut w = Writer::new(Vec::new());
        if self.declaration {
            w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
                .map_err(xml_err)?;
        }
        root.write(&mut w).map_err(xml_err)?;
        Ok(w.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
kind = "xml"
name = "x"
root = "Request"
[[field]]
name = "version"
path = "@version"
[[field]]
name = "pan"
path = "Card/PAN"
required = true
[[field]]
name = "type"
path = "Card/@type"
[[field]]
name = "memo"
path = "Memo"
"#;

    #[test]
    fn round_trip() {
        let f = XmlFormat::from_toml_str(SPEC, "x").unwrap();
        let r = Record::new()
            .with("version", "2")
            .with("pan", "6222")
            .with("type", "debit")
            .with("memo", "a<b & \"c\"");
        let bytes = f.encode(&r).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Request version=\"2\"><Card type=\"debit\"><PAN>6222</PAN></Card><Memo>a&lt;b &amp; &quot;c&quot;</Memo></Request>"
        );
        assert_eq!(f.decode(&bytes).unwrap(), r);
        let pretty = "<Request>\n  <Card>\n    <PAN> 6222 </PAN>\n  </Card>\n  <Memo><![CDATA[x<y]]>&#65;</Memo><Card><PAN>9</PAN></Card>\n</Request>\n";
        let d = f.decode(pretty.as_bytes()).unwrap();
        assert_eq!(d.get("pan"), Some("6222"));
        assert_eq!(d.get("memo"), Some("x<yA"));
        for bad in [
            "<Other/>",
            "<Request><Card><PAN>1</PAN></Card>",
            "<Request><Card><PAN>1</PAN></Card></Request><Request/>",
            "<Request><Card></Request>",
            "<Request><Memo>&bogus;</Memo></Request>",
            "",
        ] {
            assert!(f.decode(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            f.decode(b"<Request/>").unwrap_err().code(),
            "CODEC_BAD_RECORD"
        );
    }
}
