//! Splits an RFC 1035 master file (section 5.1) into entries: one logical line each,
//! with parentheses joining physical lines, `;` comments removed and quoted strings
//! kept whole. Every entry remembers the line it started on so that errors found much
//! later (at zone build time) can still point at `FILE:LINE`.
//!
//! Tokens keep their raw text (quotes and escapes included) because record data is
//! handed on to a type-aware parser that needs to see it as written.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub raw: &'a str,
    pub quoted: bool,
}

#[derive(Debug)]
pub struct Entry<'a> {
    pub line: usize,
    /// `false` when the line starts with blank space: the owner is the previous one.
    pub has_owner: bool,
    pub tokens: Vec<Token<'a>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct LexError {
    pub line: usize,
    pub message: String,
}

pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            line: 1,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'\n' {
                break;
            }
            self.pos += 1;
        }
    }

    /// The next entry with at least one token, or `None` at the end of the input.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>, LexError> {
        loop {
            if self.pos >= self.src.len() {
                return Ok(None);
            }
            let start_line = self.line;
            let has_owner = !matches!(self.peek(), Some(b' ' | b'\t'));
            let mut tokens = Vec::new();
            let mut depth = 0usize;
            let mut paren_line = start_line;
            loop {
                let Some(c) = self.peek() else {
                    if depth > 0 {
                        return Err(LexError {
                            line: paren_line,
                            message: "unbalanced '(': end of file before ')'".into(),
                        });
                    }
                    break;
                };
                match c {
                    b'\n' => {
                        self.pos += 1;
                        self.line += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b' ' | b'\t' | b'\r' => self.pos += 1,
                    b';' => self.skip_comment(),
                    b'(' => {
                        if depth == 0 {
                            paren_line = self.line;
                        }
                        depth += 1;
                        self.pos += 1;
                    }
                    b')' => {
                        if depth == 0 {
                            return Err(LexError {
                                line: self.line,
                                message: "unbalanced ')'".into(),
                            });
                        }
                        depth -= 1;
                        self.pos += 1;
                    }
                    b'"' => tokens.push(self.quoted()?),
                    _ => tokens.push(self.plain()),
                }
            }
            if !tokens.is_empty() {
                return Ok(Some(Entry {
                    line: start_line,
                    has_owner,
                    tokens,
                }));
            }
        }
    }

    fn quoted(&mut self) -> Result<Token<'a>, LexError> {
        let start = self.pos;
        let start_line = self.line;
        self.pos += 1;
        loop {
            match self.peek() {
                None => {
                    return Err(LexError {
                        line: start_line,
                        message: "unterminated quoted string".into(),
                    });
                }
                Some(b'\\') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\n') => {
                    self.line += 1;
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
        let end = self.pos.min(self.src.len());
        Ok(Token {
            raw: self.src.get(start..end).unwrap_or_default(),
            quoted: true,
        })
    }

    fn plain(&mut self) -> Token<'a> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"' => break,
                b'\\' => {
                    // An escaped newline would be odd but must not desync line counting.
                    if self.src.as_bytes().get(self.pos + 1) == Some(&b'\n') {
                        self.line += 1;
                    }
                    self.pos += 2;
                }
                _ => self.pos += 1,
            }
        }
        let end = self.pos.min(self.src.len());
        Token {
            raw: self.src.get(start..end).unwrap_or_default(),
            quoted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(src: &str) -> Vec<(usize, bool, Vec<String>)> {
        let mut lx = Lexer::new(src);
        let mut out = Vec::new();
        while let Some(e) = lx.next_entry().unwrap() {
            out.push((
                e.line,
                e.has_owner,
                e.tokens.iter().map(|t| t.raw.to_string()).collect(),
            ));
        }
        out
    }

    #[test]
    fn parentheses_join_lines_and_comments_vanish() {
        let src = "; header\n@ IN SOA ns hostmaster (\n 1 ; serial\n 2 3 4 5 )\n  A 1.2.3.4\n";
        let e = entries(src);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, 2);
        assert_eq!(e[0].2.len(), 10);
        assert_eq!(e[1], (5, false, vec!["A".into(), "1.2.3.4".into()]));
    }

    #[test]
    fn quoted_strings_stay_whole_with_semicolons_and_escapes() {
        let e = entries("txt TXT \"a ; b\" \"c\\\"d\" e\\ f\n");
        assert_eq!(
            e[0].2,
            vec!["txt", "TXT", "\"a ; b\"", "\"c\\\"d\"", "e\\ f"]
        );
    }

    #[test]
    fn broken_input_is_an_error_with_its_line() {
        let mut lx = Lexer::new("a A 1.2.3.4\nb TXT \"open\n");
        lx.next_entry().unwrap();
        assert_eq!(lx.next_entry().unwrap_err().line, 2);
        let mut lx = Lexer::new("\n\na SOA ( 1 2\n");
        assert_eq!(lx.next_entry().unwrap_err().line, 3);
        let mut lx = Lexer::new("a A 1.2.3.4 )\n");
        assert_eq!(lx.next_entry().unwrap_err().line, 1);
    }
}
