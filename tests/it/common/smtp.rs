//! A minimal SMTP server that accepts every message and keeps it, so verification mails travel
//! the real SMTP path (lettre, no TLS) and a test can read the code out of them.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub struct Smtp {
    pub port: u16,
    messages: Arc<Mutex<Vec<String>>>,
}

impl Smtp {
    pub async fn start() -> Smtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages: Arc<Mutex<Vec<String>>> = Arc::default();
        let store = messages.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut lines = BufReader::new(r).lines();
                    let _ = w.write_all(b"220 test ESMTP\r\n").await;
                    let mut in_data = false;
                    let mut data = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if in_data {
                            if line == "." {
                                in_data = false;
                                store.lock().unwrap().push(std::mem::take(&mut data));
                                let _ = w.write_all(b"250 queued\r\n").await;
                            } else {
                                data.push_str(&line);
                                data.push('\n');
                            }
                            continue;
                        }
                        let verb = line
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-test\r\n250 8BITMIME\r\n",
                            "DATA" => {
                                in_data = true;
                                b"354 go ahead\r\n"
                            }
                            "QUIT" => {
                                let _ = w.write_all(b"221 bye\r\n").await;
                                break;
                            }
                            _ => b"250 OK\r\n",
                        };
                        let _ = w.write_all(reply).await;
                    }
                });
            }
        });
        Smtp { port, messages }
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// The text of the last message to `to`, its body decoded from base64 where it was sent so.
    pub fn last_text_for(&self, to: &str) -> Option<String> {
        let msg = self.messages().into_iter().rev().find(|m| m.contains(to))?;
        let (head, body) = msg.split_once("\n\n")?;
        let text = if head
            .to_ascii_lowercase()
            .contains("content-transfer-encoding: base64")
        {
            use base64::Engine;
            let joined: String = body.split_whitespace().collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(joined)
                    .ok()?,
            )
            .ok()?
        } else {
            body.replace("=\n", "")
        };
        Some(text)
    }

    /// The 6-digit code of the last message to `to`.
    pub fn last_code_for(&self, to: &str) -> Option<String> {
        let text = self.last_text_for(to)?;
        let digits: Vec<char> = text.chars().collect();
        digits.windows(6).find_map(|w| {
            w.iter()
                .all(|c| c.is_ascii_digit())
                .then(|| w.iter().collect())
        })
    }
}
