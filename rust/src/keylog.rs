//! Key logging for Wireshark: rustls' `KeyLog` writing the NSS key log format to a file.
//!
//! rustls' own `KeyLogFile` reads only `SSLKEYLOGFILE`; unitls also takes a path per context.
//! The file is opened once per configuration with `O_APPEND` (created with mode 0600: it holds
//! secrets), and every line goes out in one `write()` of an unbuffered file, so lines from many
//! threads and processes never interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::errors::config_err;
use pyo3::PyResult;

pub struct FileKeyLog {
    file: File,
}

impl std::fmt::Debug for FileKeyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKeyLog")
    }
}

fn hex_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

impl rustls::KeyLog for FileKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
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

/// Open `path` for appending key log lines (ConfigurationError if that is impossible).
pub fn open(path: PathBuf) -> PyResult<Arc<dyn rustls::KeyLog>> {
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
    Ok(Arc::new(FileKeyLog { file }))
}
