//! The rule expression language: integers, names, `len(ARRAY)`, `ctx.NAME`, arithmetic,
//! comparisons and boolean operators. Parsed once, checked against the fields in scope,
//! emitted as checked Rust arithmetic.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Int(u64),
    /// A field of the record or struct, or `body_length`.
    Name(String),
    /// `ctx.NAME`: a fact about the surrounding stream; the rule is skipped when unknown.
    Ctx(String),
    /// `len(ARRAY)`.
    Len(String),
    /// An integer constant of the format (an `UPPER_SNAKE` name).
    Const(String),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

/// A Rust identifier for a spec name, raw when the name is a Rust keyword.
pub fn ident(name: &str) -> proc_macro2::Ident {
    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
        "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
        "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where", "while",
        "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro", "override",
        "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
    ];
    if KEYWORDS.contains(&name) {
        proc_macro2::Ident::new_raw(name, proc_macro2::Span::call_site())
    } else {
        proc_macro2::Ident::new(name, proc_macro2::Span::call_site())
    }
}

/// Whether an expression yields an integer or a truth value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Bool,
}

/// The context values a rule may name.
pub const CTX_NAMES: &[&str] = &["version", "guest_width"];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(u64),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Dot,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    const OPS: [&str; 17] = [
        "==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", ".",
    ];
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let t = s[start..i].replace('_', "");
            let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                u64::from_str_radix(h, 16)
            } else {
                t.parse()
            };
            out.push(Tok::Int(
                v.map_err(|_| format!("bad integer `{}`", &s[start..i]))?,
            ));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(s[start..i].to_string()));
        } else {
            let op = OPS
                .iter()
                .find(|op| s[i..].starts_with(**op))
                .ok_or_else(|| format!("unexpected character `{}`", c as char))?;
            i += op.len();
            out.push(match *op {
                "(" => Tok::LParen,
                ")" => Tok::RParen,
                "." => Tok::Dot,
                o => Tok::Op(o),
            });
        }
    }
    Ok(out)
}

struct P {
    toks: Vec<Tok>,
    pos: usize,
}

fn binop(op: &str) -> Option<(BinOp, u8)> {
    Some(match op {
        "||" => (BinOp::Or, 1),
        "&&" => (BinOp::And, 2),
        "==" => (BinOp::Eq, 3),
        "!=" => (BinOp::Ne, 3),
        "<" => (BinOp::Lt, 4),
        "<=" => (BinOp::Le, 4),
        ">" => (BinOp::Gt, 4),
        ">=" => (BinOp::Ge, 4),
        "+" => (BinOp::Add, 5),
        "-" => (BinOp::Sub, 5),
        "*" => (BinOp::Mul, 6),
        "/" => (BinOp::Div, 6),
        "%" => (BinOp::Rem, 6),
        _ => return None,
    })
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expr(&mut self, min: u8) -> Result<Expr, String> {
        let mut lhs = self.atom()?;
        while let Some(Tok::Op(op)) = self.peek() {
            let Some((op, prec)) = binop(op) else { break };
            if prec < min {
                break;
            }
            self.pos += 1;
            let rhs = self.expr(prec + 1)?;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Int(v)) => Ok(Expr::Int(v)),
            Some(Tok::Op("!")) => Ok(Expr::Not(Box::new(self.atom()?))),
            Some(Tok::LParen) => {
                let e = self.expr(0)?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => Err("missing `)`".into()),
                }
            }
            Some(Tok::Ident(id)) if id == "ctx" => {
                if self.next() != Some(Tok::Dot) {
                    return Err("`ctx` must be followed by `.NAME`".into());
                }
                match self.next() {
                    Some(Tok::Ident(n)) => Ok(Expr::Ctx(n)),
                    _ => Err("`ctx.` must be followed by a name".into()),
                }
            }
            Some(Tok::Ident(id)) if id == "len" && self.peek() == Some(&Tok::LParen) => {
                self.pos += 1;
                let name = match self.next() {
                    Some(Tok::Ident(n)) => n,
                    _ => return Err("`len(` must be followed by an array name".into()),
                };
                match self.next() {
                    Some(Tok::RParen) => Ok(Expr::Len(name)),
                    _ => Err("missing `)` after `len(NAME`".into()),
                }
            }
            Some(Tok::Ident(id)) if is_constant_name(&id) => Ok(Expr::Const(id)),
            Some(Tok::Ident(id)) => Ok(Expr::Name(id)),
            Some(t) => Err(format!("unexpected `{t:?}`")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

/// Parses an expression.
pub fn parse(s: &str) -> Result<Expr, String> {
    let toks = lex(s)?;
    let mut p = P { toks, pos: 0 };
    let e = p.expr(0)?;
    if p.pos != p.toks.len() {
        return Err(format!(
            "unexpected `{:?}` after the expression",
            p.toks[p.pos]
        ));
    }
    Ok(e)
}

/// Whether an identifier names a constant: constants are `UPPER_SNAKE`, fields `lower_snake`.
fn is_constant_name(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_uppercase())
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// What the names in an expression may refer to.
pub trait Scope {
    /// Whether `name` is an integer in scope.
    fn has_int(&self, name: &str) -> bool;
    /// Whether `name` is an array in scope.
    fn has_array(&self, name: &str) -> bool;
    /// Whether `name` is an integer constant of the format.
    fn has_const(&self, _name: &str) -> bool {
        false
    }
}

impl Expr {
    /// Checks names and kinds; returns the kind of the expression.
    pub fn check(&self, scope: &dyn Scope) -> Result<Kind, String> {
        Ok(match self {
            Expr::Int(_) => Kind::Int,
            Expr::Name(n) => {
                if n != "body_length" && !scope.has_int(n) {
                    return Err(format!("`{n}` is not an integer field in scope"));
                }
                Kind::Int
            }
            Expr::Ctx(n) => {
                if !CTX_NAMES.contains(&n.as_str()) {
                    return Err(format!(
                        "`ctx.{n}` is not a context value (known: {})",
                        CTX_NAMES.join(", ")
                    ));
                }
                Kind::Int
            }
            Expr::Len(n) => {
                if !scope.has_array(n) {
                    return Err(format!("`len({n})` does not name an array field"));
                }
                Kind::Int
            }
            Expr::Const(n) => {
                if !scope.has_const(n) {
                    return Err(format!("`{n}` is not an integer constant of this format"));
                }
                Kind::Int
            }
            Expr::Not(e) => {
                if e.check(scope)? != Kind::Bool {
                    return Err("`!` needs a truth value".into());
                }
                Kind::Bool
            }
            Expr::Bin(op, a, b) => {
                let (ka, kb) = (a.check(scope)?, b.check(scope)?);
                match op {
                    BinOp::And | BinOp::Or => {
                        if ka != Kind::Bool || kb != Kind::Bool {
                            return Err("`&&` and `||` need truth values".into());
                        }
                        Kind::Bool
                    }
                    BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                        if ka != Kind::Int || kb != Kind::Int {
                            return Err("comparisons need integers on both sides".into());
                        }
                        Kind::Bool
                    }
                    _ => {
                        if ka != Kind::Int || kb != Kind::Int {
                            return Err("arithmetic needs integers".into());
                        }
                        Kind::Int
                    }
                }
            }
        })
    }

    /// Every name, context value and array the expression mentions, each once, in order.
    pub fn names(&self, out: &mut Vec<Expr>) {
        match self {
            Expr::Int(_) | Expr::Const(_) => {}
            Expr::Name(_) | Expr::Ctx(_) | Expr::Len(_) => {
                if !out.contains(self) {
                    out.push(self.clone());
                }
            }
            Expr::Not(e) => e.names(out),
            Expr::Bin(_, a, b) => {
                a.names(out);
                b.names(out);
            }
        }
    }

    /// Context values the expression needs.
    pub fn ctx_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.names(&mut v);
        v.into_iter()
            .filter_map(|e| match e {
                Expr::Ctx(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// Rust for the expression inside a closure returning `Option<_>`: integers are u64
    /// locals named like the fields (`body_length`, `len_NAME`, `ctx_NAME`), arithmetic is
    /// checked and returns `None` on overflow.
    pub fn to_rust(&self) -> TokenStream {
        match self {
            Expr::Int(v) => quote!(#v),
            Expr::Name(n) => {
                let id = ident(n);
                quote!(#id)
            }
            Expr::Ctx(n) => {
                let id = format_ident!("ctx_{}", n);
                quote!(#id)
            }
            Expr::Len(n) => {
                let id = format_ident!("len_{}", n);
                quote!(#id)
            }
            Expr::Const(n) => {
                let id = format_ident!("{}", n);
                quote!((#id as u64))
            }
            Expr::Not(e) => {
                let e = e.to_rust();
                quote!((!#e))
            }
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.to_rust(), b.to_rust());
                match op {
                    BinOp::Add => quote!(#a.checked_add(#b)?),
                    BinOp::Sub => quote!(#a.checked_sub(#b)?),
                    BinOp::Mul => quote!(#a.checked_mul(#b)?),
                    BinOp::Div => quote!(#a.checked_div(#b)?),
                    BinOp::Rem => quote!(#a.checked_rem(#b)?),
                    BinOp::Eq => quote!((#a == #b)),
                    BinOp::Ne => quote!((#a != #b)),
                    BinOp::Lt => quote!((#a < #b)),
                    BinOp::Le => quote!((#a <= #b)),
                    BinOp::Gt => quote!((#a > #b)),
                    BinOp::Ge => quote!((#a >= #b)),
                    BinOp::And => quote!((#a && #b)),
                    BinOp::Or => quote!((#a || #b)),
                }
            }
        }
    }

    /// The name of the local holding a value the expression mentions.
    pub fn local_name(&self) -> String {
        match self {
            Expr::Name(n) => n.clone(),
            Expr::Ctx(n) => format!("ctx_{n}"),
            Expr::Len(n) => format!("len_{n}"),
            _ => String::new(),
        }
    }

    /// How the value is spelled in the spec.
    pub fn spelling(&self) -> String {
        match self {
            Expr::Name(n) | Expr::Const(n) => n.clone(),
            Expr::Ctx(n) => format!("ctx.{n}"),
            Expr::Len(n) => format!("len({n})"),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S;
    impl Scope for S {
        fn has_int(&self, n: &str) -> bool {
            matches!(n, "count" | "start" | "end")
        }
        fn has_array(&self, n: &str) -> bool {
            n == "entries"
        }
    }

    #[test]
    fn precedence_and_kinds() {
        let e = parse("body_length == 8 + 16 * count && count >= 1").unwrap();
        assert_eq!(e.check(&S), Ok(Kind::Bool));
        match e {
            Expr::Bin(BinOp::And, a, _) => match *a {
                Expr::Bin(BinOp::Eq, _, r) => assert!(matches!(*r, Expr::Bin(BinOp::Add, ..))),
                _ => panic!("wrong tree"),
            },
            _ => panic!("wrong tree"),
        }
    }

    #[test]
    fn errors() {
        assert!(parse("count >=").is_err());
        assert!(parse("(count").is_err());
        assert!(parse("count $ 1").is_err());
        assert!(parse("nope == 1").unwrap().check(&S).is_err());
        assert!(parse("ctx.nope == 1").unwrap().check(&S).is_err());
        assert!(parse("count + 1").unwrap().check(&S) == Ok(Kind::Int));
        assert!(parse("len(count) > 0").unwrap().check(&S).is_err());
        assert!(parse("count && 1").unwrap().check(&S).is_err());
    }
}
