//! Finds where a node of the YAML document starts, so that errors found after
//! deserialisation can still point at file:line:col.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Start positions (1-based line and column) of every node and every mapping key, by path.
/// Paths look like `records[3].fields[1].count`; a key's own position is stored under
/// `path#key`.
#[derive(Debug, Default)]
pub struct Locations {
    nodes: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

struct Walker {
    stack: Vec<Frame>,
    out: Locations,
}

impl Walker {
    /// The path of the node that starts now, and advances the parent.
    fn next_path(&mut self, mark: Marker, scalar: Option<&str>) -> Option<String> {
        let pos = (mark.line(), mark.col() + 1);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    // This node is a key.
                    let k = scalar.unwrap_or("?").to_string();
                    let p = join(path, &k);
                    self.out.nodes.insert(format!("{p}#key"), pos);
                    *key = Some(k);
                    None
                }
                Some(k) => Some(join(path, &k)),
            },
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(ref s, ..) => {
                if let Some(p) = self.next_path(mark, Some(s)) {
                    self.out.nodes.insert(p, pos);
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.next_path(mark, None) {
                    self.out.nodes.insert(p, pos);
                }
            }
            Event::MappingStart(..) => {
                let p = self.next_path(mark, None).unwrap_or_default();
                self.out.nodes.insert(p.clone(), pos);
                self.stack.push(Frame::Map { path: p, key: None });
            }
            Event::SequenceStart(..) => {
                let p = self.next_path(mark, None).unwrap_or_default();
                self.out.nodes.insert(p.clone(), pos);
                self.stack.push(Frame::Seq { path: p, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Locations {
    /// Walks the document; a syntax error leaves the map partial (serde reports it).
    pub fn scan(text: &str) -> Locations {
        let mut w = Walker {
            stack: Vec::new(),
            out: Locations::default(),
        };
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut w, false);
        w.out
    }

    /// Position of the key `key` inside the node at `path`, else of the node, else of the
    /// closest ancestor that has one.
    pub fn find(&self, path: &str, key: Option<&str>) -> (usize, usize) {
        if let Some(k) = key {
            if let Some(p) = self.nodes.get(&format!("{}#key", join(path, k))) {
                return *p;
            }
        }
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self
                .nodes
                .get(&format!("{p}#key"))
                .or_else(|| self.nodes.get(&p))
            {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return self.nodes.get("").copied().unwrap_or((1, 1)),
            }
        }
    }
}
