//! Key logging for Wireshark: the NSS key log format written to a file, for the Rust engines
//! (rustls through its `KeyLog` trait; NSS from its `SSL_SecretCallback`, see `nss/session.rs`).
//!
//! rustls' own `KeyLogFile` reads only `SSLKEYLOGFILE`, and Debian's NSS ignores it; unitls
//! takes a path per context (Python resolves `SSLKEYLOGFILE` into it). The file is opened once per
//! configuration with `O_APPEND` (created with mode 0600: it holds secrets), and every line goes
//! out in one `write()` of an unbuffered file, so lines from many threads and processes never
//! interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::errors::config_err;
use pyo3::PyResult;

pub struct KeyLogFile {
    file: File,
}

impl std::fmt::Debug for KeyLogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyLogFile")
    }
}

fn hex_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

impl KeyLogFile {
    /// Append `LABEL <client random> <secret>` (hex) as one line.
    pub fn write(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut line =
            String::with_capacity(label.len() + 4 + 2 * (client_random.len() + secret.len()));
        line.push_str(label);
        line.push(' ');
        hex_into(&mut line, client_random);
        line.push(' ');
        hex_into(&mut line, secret);
        line.push('\n');
        // A failing debug aid must not fail the connection: the line is lost, nothing else.
        let _ = (&self.file).write_all(line.as_bytes());
    }
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        self.write(label, client_random, secret);
    }
}

/// Open `path` for appending key log lines (ConfigurationError if that is impossible).
pub fn open(path: PathBuf) -> PyResult<Arc<KeyLogFile>> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            config_err(format!(
                "cannot open the key log file {}: {e}",
                path.display()
            ))
        })?;
    Ok(Arc::new(KeyLogFile { file }))
}
