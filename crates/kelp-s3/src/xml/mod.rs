//! XML for S3 bodies: a small bounded reader into a tree, and a writer.
//!
//! Request bodies are read whole (they are small: callers cap them with
//! the `MAX_*` limits in [`requests`]) into [`Node`]s, namespaces dropped
//! (elements are matched by local name, as S3 does). DTDs, processing
//! instructions and entities other than the five predefined ones and
//! character references are refused, so nothing expands.
//!
//! Responses are written with [`Writer`]; every document starts with
//! `<?xml version="1.0" encoding="UTF-8"?>` and the root carries
//! `xmlns="http://s3.amazonaws.com/doc/2006-03-01/"`.

pub mod requests;
pub mod responses;

use quick_xml::events::Event;

use crate::error::{S3Error, S3ErrorCode, S3Result};

/// The S3 namespace.
pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
/// Deepest element nesting read.
const MAX_DEPTH: usize = 16;
/// Most elements in one body.
const MAX_NODES: usize = 50_000;

/// Escapes text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// An element: local name, text (concatenated) and child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// The first child with this name.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with this name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child with this name.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

pub(crate) fn malformed(m: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::MalformedXML, m.to_owned())
}

/// Parses a document of at most `max_bytes` into its root element.
pub fn parse(body: &[u8], max_bytes: usize) -> S3Result<Node> {
    if body.len() > max_bytes {
        return Err(malformed("request body is too large"));
    }
    let text = std::str::from_utf8(body).map_err(|_| malformed("body is not UTF-8"))?;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut nodes = 0usize;
    let bad = |_| malformed("The XML you provided was not well-formed");
    loop {
        let ev = reader.read_event().map_err(bad)?;
        match ev {
            Event::Start(e) => open_node(
                &mut stack,
                &mut root,
                &mut nodes,
                e.local_name().as_ref(),
                false,
            )?,
            Event::Empty(e) => open_node(
                &mut stack,
                &mut root,
                &mut nodes,
                e.local_name().as_ref(),
                true,
            )?,
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| malformed("unmatched end tag"))?;
                close(&mut stack, &mut root, node);
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content())?,
            Event::CData(t) => push_text(&mut stack, &t.into_inner())?,
            Event::GeneralRef(r) => {
                let s = match r
                    .resolve_char_ref()
                    .map_err(|_| malformed("bad character reference"))?
                {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&r.into_inner())
                        .ok_or_else(|| malformed("unknown entity"))?
                        .to_owned(),
                };
                push_text(&mut stack, &s)?;
            }
            Event::Decl(_) | Event::Comment(_) => {}
            Event::DocType(_) | Event::PI(_) => {
                return Err(malformed(
                    "DTDs and processing instructions are not allowed",
                ));
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed("unclosed element"));
    }
    root.ok_or_else(|| malformed("empty document"))
}

fn open_node(
    stack: &mut Vec<Node>,
    root: &mut Option<Node>,
    nodes: &mut usize,
    name: &str,
    empty: bool,
) -> S3Result<()> {
    *nodes += 1;
    if root.is_some() || stack.len() >= MAX_DEPTH || *nodes > MAX_NODES {
        return Err(malformed(
            "too deep, too many elements, or content after the root",
        ));
    }
    let node = Node {
        name: name.to_owned(),
        ..Node::default()
    };
    if empty {
        close(stack, root, node);
    } else {
        stack.push(node);
    }
    Ok(())
}

fn close(stack: &mut [Node], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn push_text(stack: &mut [Node], s: &str) -> S3Result<()> {
    match stack.last_mut() {
        Some(n) => {
            n.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(malformed("text outside the root element")),
    }
}

/// Builds a response document.
pub struct Writer {
    out: String,
}

impl Writer {
    /// Starts a document with `root` in the S3 namespace.
    pub fn new(root: &str) -> Self {
        let mut out = String::with_capacity(1024);
        out.push_str(DECL);
        out.push('<');
        out.push_str(root);
        out.push_str(" xmlns=\"");
        out.push_str(S3_NS);
        out.push_str("\">");
        Writer { out }
    }

    /// A document whose root has no namespace (S3's `<Error>`, `<PostResponse>`).
    pub fn bare(root: &str) -> Self {
        Writer {
            out: format!("{DECL}<{root}>"),
        }
    }

    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// `<name>escaped text</name>`.
    pub fn elem(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        self.out.push_str(&escape(text));
        self.close(name)
    }

    /// An element only when the value is there.
    pub fn opt(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.elem(name, t);
        }
        self
    }

    /// Raw markup (already escaped).
    pub fn raw(&mut self, s: &str) -> &mut Self {
        self.out.push_str(s);
        self
    }

    /// Closes the root and returns the document.
    pub fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tree() {
        let n = parse(
            br#"<?xml version="1.0"?><!-- c --><a:Root xmlns:a="x"><a:K>v &amp; &#65;&#x42;</a:K><E/><![CDATA[<t>]]></a:Root>"#,
            1000,
        )
        .unwrap();
        assert_eq!(n.name, "Root");
        assert_eq!(n.text_of("K"), Some("v & AB"));
        assert_eq!(n.child("E").unwrap().text, "");
        assert_eq!(n.text, "<t>");
    }

    #[test]
    fn refuses() {
        for bad in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"",
            b"<a/><b/>",
            b"text",
            b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            b"<a>&x;</a>",
            b"<a>&#0;</a>",
            b"<a>\xff</a>",
            b"<?pi x?><a/>",
        ] {
            assert_eq!(
                parse(bad, 1000).unwrap_err().code,
                S3ErrorCode::MalformedXML,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "<a>".repeat(17) + &"</a>".repeat(17);
        assert!(parse(deep.as_bytes(), 10_000).is_err());
        assert!(parse(b"<a></a>", 3).is_err());
    }

    #[test]
    fn writes() {
        let mut w = Writer::new("R");
        w.elem("K", "a<&>").opt("N", None).opt("M", Some("x"));
        assert_eq!(
            w.finish("R"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><R xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><K>a&lt;&amp;&gt;</K><M>x</M></R>"
        );
    }
}
