//! Reading a ClientHello before NSS sees it: a server picks its chain (SNI) and whether to offer
//! ALPN at all from it.
//!
//! NSS aborts a handshake with `no_application_protocol` when the client offers ALPN protocols and
//! none is ours, and its server hooks cannot decline ALPN. OpenSSL and unitls' rustls engine
//! complete such handshakes without ALPN instead; reading the offer first lets the NSS engine
//! leave ALPN unconfigured for that connection and behave the same. The SNI name picks among
//! several chains the same way, so no SNI hook (and no `SSL_ReconfigFD`) is needed.

/// What the queued bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek {
    /// A ClientHello may follow: wait for more bytes.
    Incomplete,
    /// A complete ClientHello.
    Hello {
        server_name: Option<String>,
        /// `None`: no ALPN extension.
        alpn: Option<Vec<Vec<u8>>>,
        /// The client offers 0-RTT data (which unitls never accepts).
        early_data: bool,
    },
    /// Not a (parseable) ClientHello: NSS will reject it with its own error.
    NotAHello,
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const MAX_RECORD: usize = 16384 + 2048;
const MAX_HELLO: usize = 1 << 16;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| (b[0] as usize) << 8 | b[1] as usize)
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Look for a complete ClientHello at the start of `data` (records as received).
pub fn peek(data: &[u8]) -> Peek {
    let mut message = Vec::new();
    let mut rest = data;
    loop {
        if rest.len() < 5 {
            return Peek::Incomplete;
        }
        let len = (rest[3] as usize) << 8 | rest[4] as usize;
        if rest[0] != HANDSHAKE || len == 0 || len > MAX_RECORD {
            return Peek::NotAHello;
        }
        if rest.len() < 5 + len {
            return Peek::Incomplete;
        }
        message.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if message.len() >= 4 {
            if message[0] != CLIENT_HELLO {
                return Peek::NotAHello;
            }
            let body_len =
                (message[1] as usize) << 16 | (message[2] as usize) << 8 | message[3] as usize;
            if body_len > MAX_HELLO {
                return Peek::NotAHello;
            }
            if message.len() >= 4 + body_len {
                return parse_body(&message[4..4 + body_len]).unwrap_or(Peek::NotAHello);
            }
        }
    }
}

fn parse_body(body: &[u8]) -> Option<Peek> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut server_name = None;
    let mut alpn = None;
    let mut early_data = false;
    if r.0.is_empty() {
        return Some(Peek::Hello {
            server_name,
            alpn,
            early_data,
        });
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut ext = Reader(exts.vec16()?);
        match kind {
            0 => {
                let mut list = Reader(ext.vec16()?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 && server_name.is_none() {
                        server_name = std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
                    }
                }
            }
            16 => {
                let mut list = Reader(ext.vec16()?);
                let mut protocols = Vec::new();
                while !list.0.is_empty() {
                    protocols.push(list.vec8()?.to_vec());
                }
                alpn = Some(protocols);
            }
            42 => early_data = true,
            _ => {}
        }
    }
    Some(Peek::Hello {
        server_name,
        alpn,
        early_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &[u8]) -> Vec<u8> {
        let mut msg = vec![CLIENT_HELLO, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend_from_slice(body);
        let mut rec = vec![HANDSHAKE, 3, 1, (msg.len() >> 8) as u8, msg.len() as u8];
        rec.extend_from_slice(&msg);
        rec
    }

    fn hello(exts: &[u8]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[0; 32]);
        b.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        b.extend_from_slice(&[(exts.len() >> 8) as u8, exts.len() as u8]);
        b.extend_from_slice(exts);
        b
    }

    #[test]
    fn sni_and_alpn() {
        let sni = [0, 0, 0, 9, 0, 7, 0, 0, 4, b'H', b'o', b's', b't'];
        let alpn = [0, 16, 0, 8, 0, 6, 2, b'h', b'2', 2, b'h', b'3'];
        let rec = record(&hello(&[&sni[..], &alpn[..]].concat()));
        let want = Peek::Hello {
            server_name: Some("host".into()),
            alpn: Some(vec![b"h2".to_vec(), b"h3".to_vec()]),
            early_data: false,
        };
        assert_eq!(peek(&rec), want);
        for cut in 0..rec.len() {
            assert_eq!(peek(&rec[..cut]), Peek::Incomplete, "cut at {cut}");
        }
        // The same message split over two records.
        let msg = &rec[5..];
        let mut two = vec![HANDSHAKE, 3, 1, 0, 10];
        two.extend_from_slice(&msg[..10]);
        two.extend_from_slice(&[HANDSHAKE, 3, 1, 0, (msg.len() - 10) as u8]);
        two.extend_from_slice(&msg[10..]);
        assert_eq!(peek(&two), want);
    }

    #[test]
    fn not_a_hello() {
        assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Peek::NotAHello);
        assert_eq!(peek(&[HANDSHAKE, 3, 3, 0, 4, 2, 0, 0, 0]), Peek::NotAHello);
        let rec = record(&[3, 3, 1]);
        assert_eq!(peek(&rec), Peek::NotAHello);
        let no_ext = record(&hello(&[])[..41]);
        assert_eq!(
            peek(&no_ext),
            Peek::Hello {
                server_name: None,
                alpn: None,
                early_data: false,
            }
        );
    }
}
