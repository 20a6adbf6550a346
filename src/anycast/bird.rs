//! BIRD 2's control socket (what `birdc` speaks): one text command per line; each reply
//! line starts with a four-digit code followed by `-` (more lines follow) or a space
//! (the last line), and a line starting with a space continues the previous code.
//! Codes 0xxx are done, 1xxx table rows, 2xxx headings, 8xxx runtime errors and 9xxx
//! parse errors (an unknown protocol name is a 9001 syntax error). Meridian only
//! enables and disables the operator's `protocol static` per prefix and reads
//! `show protocols`: the BGP configuration stays the operator's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Longest wait for BIRD to connect or answer one command.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A reply longer than this is cut off (a `show route` of a full table would be).
const MAX_REPLY_LINES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("cannot reach BIRD at {0}: {1}")]
    Unreachable(PathBuf, std::io::Error),
    #[error("BIRD did not answer within {}s", TIMEOUT.as_secs())]
    Timeout,
    #[error("BIRD closed the control socket")]
    Closed,
    #[error("BIRD answered {code}: {text}")]
    Refused { code: u16, text: String },
    #[error("BIRD's reply is not its control protocol: {0:?}")]
    Garbled(String),
}

/// One reply: its lines as (code, text), the last one's code deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub lines: Vec<(u16, String)>,
}

impl Reply {
    pub fn code(&self) -> u16 {
        self.lines.last().map_or(0, |l| l.0)
    }
}

/// Reads one line of a reply: `Some(final)` for a coded line, `None` for a
/// continuation (`code` is then the previous line's).
fn parse_line(line: &str, previous: u16) -> Result<(u16, String, bool), BirdError> {
    if let Some(rest) = line.strip_prefix(' ') {
        return Ok((previous, rest.to_string(), false));
    }
    let (digits, rest) = line
        .split_at_checked(4)
        .ok_or_else(|| BirdError::Garbled(line.to_string()))?;
    let code: u16 = digits
        .parse()
        .map_err(|_| BirdError::Garbled(line.to_string()))?;
    match rest.chars().next() {
        Some('-') => Ok((code, rest[1..].to_string(), false)),
        Some(' ') => Ok((code, rest[1..].to_string(), true)),
        None => Ok((code, String::new(), true)),
        _ => Err(BirdError::Garbled(line.to_string())),
    }
}

/// A connection to BIRD, opened on first use and again after any failure.
pub struct Bird {
    socket: PathBuf,
    conn: Option<BufReader<UnixStream>>,
}

impl Bird {
    pub fn new(socket: &Path) -> Bird {
        Bird {
            socket: socket.to_path_buf(),
            conn: None,
        }
    }

    async fn connect(&self) -> Result<BufReader<UnixStream>, BirdError> {
        let stream = tokio::time::timeout(TIMEOUT, UnixStream::connect(&self.socket))
            .await
            .map_err(|_| BirdError::Timeout)?
            .map_err(|e| BirdError::Unreachable(self.socket.clone(), e))?;
        let mut conn = BufReader::new(stream);
        // The greeting: "0001 BIRD 2.0.12 ready."
        read_reply(&mut conn).await?;
        Ok(conn)
    }

    /// Sends `command`; a reply ending in an error code is `Refused`.
    pub async fn command(&mut self, command: &str) -> Result<Reply, BirdError> {
        let result = self.exchange(command).await;
        if !matches!(result, Ok(_) | Err(BirdError::Refused { .. })) {
            // A connection in an unknown state is not reused.
            self.conn = None;
        }
        let reply = result?;
        if reply.code() >= 8000 {
            let text = reply.lines.last().map(|l| l.1.clone()).unwrap_or_default();
            return Err(BirdError::Refused {
                code: reply.code(),
                text,
            });
        }
        Ok(reply)
    }

    async fn exchange(&mut self, command: &str) -> Result<Reply, BirdError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(BirdError::Closed);
        };
        let line = format!("{command}\n");
        tokio::time::timeout(TIMEOUT, conn.get_mut().write_all(line.as_bytes()))
            .await
            .map_err(|_| BirdError::Timeout)?
            .map_err(|_| BirdError::Closed)?;
        read_reply(conn).await
    }

    /// `enable NAME` / `disable NAME`: BIRD starts or stops the protocol, and its route
    /// with it. Already in that state is fine.
    pub async fn set_protocol(&mut self, name: &str, enabled: bool) -> Result<(), BirdError> {
        let verb = if enabled { "enable" } else { "disable" };
        self.command(&format!("{verb} {name}")).await.map(|_| ())
    }

    /// `show protocols`: every protocol's name, kind, state and info.
    pub async fn protocols(&mut self) -> Result<Vec<Protocol>, BirdError> {
        Ok(parse_protocols(&self.command("show protocols").await?))
    }
}

async fn read_reply(conn: &mut BufReader<UnixStream>) -> Result<Reply, BirdError> {
    let mut lines = Vec::new();
    let mut code = 0;
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = tokio::time::timeout(TIMEOUT, conn.read_line(&mut buf))
            .await
            .map_err(|_| BirdError::Timeout)?
            .map_err(|_| BirdError::Closed)?;
        if n == 0 {
            return Err(BirdError::Closed);
        }
        let (c, text, last) = parse_line(buf.trim_end_matches(['\n', '\r']), code)?;
        code = c;
        if lines.len() < MAX_REPLY_LINES {
            lines.push((c, text));
        }
        if last {
            return Ok(Reply { lines });
        }
    }
}

/// A row of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Protocol {
    pub name: String,
    pub proto: String,
    pub state: String,
    pub since: String,
    pub info: String,
}

fn parse_protocols(reply: &Reply) -> Vec<Protocol> {
    reply
        .lines
        .iter()
        .filter(|(code, _)| *code == 1002)
        .filter_map(|(_, text)| {
            let mut cols = text.split_whitespace();
            let name = cols.next()?.to_string();
            let proto = cols.next()?.to_string();
            let _table = cols.next()?;
            let state = cols.next()?.to_string();
            let since = cols.next().unwrap_or_default().to_string();
            let info = cols.collect::<Vec<_>>().join(" ");
            Some(Protocol {
                name,
                proto,
                state,
                since,
                info,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    use super::*;

    /// Replies recorded from BIRD 2.0.12 (Debian 12's bird2).
    const GREETING: &str = "0001 BIRD 2.0.12 ready.\n";
    const DISABLED: &str = "0009-anycast_ns: disabled\n0000 \n";
    const ALREADY: &str = "0008-anycast_ns: already disabled\n0000 \n";
    const UNKNOWN: &str =
        "9001 syntax error, unexpected CF_SYM_UNDEFINED, expecting CF_SYM_KNOWN or TEXT or ALL\n";
    const PROTOCOLS: &str = "2002-Name       Proto      Table      State  Since         Info\n\
        1002-device1    Device     ---        up     15:07:52.322  \n \
        anycast_ns Static     master4    down   15:09:01.004  \n \
        uplink     BGP        ---        up     15:07:53.201  Established   \n0000 \n";

    /// A fake BIRD that greets (unless `greet` is false) and answers each command line
    /// with the next of `replies` (none left: it hangs).
    fn fake(greet: bool, replies: Vec<&'static str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bird.ctl");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            if greet {
                s.write_all(GREETING.as_bytes()).await.unwrap();
            }
            let mut buf = [0u8; 256];
            for r in replies {
                if s.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                s.write_all(r.as_bytes()).await.unwrap();
            }
            std::future::pending::<()>().await;
        });
        (dir, path)
    }

    #[tokio::test]
    async fn enable_disable_and_already() {
        let (_d, path) = fake(true, vec![DISABLED, ALREADY]);
        let mut b = Bird::new(&path);
        b.set_protocol("anycast_ns", false).await.unwrap();
        b.set_protocol("anycast_ns", false).await.unwrap();
    }

    #[tokio::test]
    async fn an_unknown_protocol_is_refused_with_birds_words() {
        let (_d, path) = fake(true, vec![UNKNOWN]);
        let mut b = Bird::new(&path);
        let e = b.set_protocol("nosuch", true).await.unwrap_err();
        assert!(
            matches!(&e, BirdError::Refused { code: 9001, text } if text.contains("syntax error")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn show_protocols_rows() {
        let (_d, path) = fake(true, vec![PROTOCOLS]);
        let rows = Bird::new(&path).protocols().await.unwrap();
        let names: Vec<_> = rows
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.proto.as_str(),
                    p.state.as_str(),
                    p.info.as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("device1", "Device", "up", ""),
                ("anycast_ns", "Static", "down", ""),
                ("uplink", "BGP", "up", "Established"),
            ]
        );
    }

    #[tokio::test]
    async fn absent_socket_hang_and_close_are_errors_not_waits() {
        let dir = tempfile::tempdir().unwrap();
        let e = Bird::new(&dir.path().join("none.ctl"))
            .set_protocol("x", true)
            .await
            .unwrap_err();
        assert!(matches!(e, BirdError::Unreachable(..)), "{e}");
        // Greets, then never answers.
        let (_d, path) = fake(true, vec![]);
        let started = std::time::Instant::now();
        let e = Bird::new(&path).set_protocol("x", true).await.unwrap_err();
        assert!(matches!(e, BirdError::Timeout), "{e}");
        assert!(started.elapsed() < TIMEOUT * 2);
        // Never greets.
        let (_d2, path) = fake(false, vec![]);
        let e = Bird::new(&path).set_protocol("x", true).await.unwrap_err();
        assert!(matches!(e, BirdError::Timeout), "{e}");
    }

    #[test]
    fn garbled_lines() {
        for bad in ["hello", "00x1 x", "0001!"] {
            assert!(parse_line(bad, 0).is_err(), "{bad}");
        }
        assert_eq!(
            parse_line(" more", 1002).unwrap(),
            (1002, "more".into(), false)
        );
        assert_eq!(parse_line("0000", 0).unwrap(), (0, String::new(), true));
    }
}
