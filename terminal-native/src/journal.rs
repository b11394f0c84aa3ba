//! The electronic journal (EJ): one human-readable line per step of a customer session or a
//! device event, appended to `<journal dir>/ej-YYYYMMDD.log` (local date) and fsynced before
//! the step goes on, so a journaled refusal is on disk before the page hears of it.
//!
//! The journal must never hold a full card number, track data or PIN data: callers pass
//! masked values ([`mask_pan`], [`mask_track`]) and [`EJournal::write`] scrubs every line once
//! more, masking any run of 12 to 19 digits to first 6 / last 4 and cutting anything after a
//! track separator (`=`, `^`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a journal line could not be written.
#[derive(Debug, thiserror::Error)]
#[error("electronic journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

struct Open {
    date: String,
    file: std::fs::File,
}

/// The journal writer; cheap to clone.
#[derive(Clone)]
pub struct EJournal {
    dir: PathBuf,
    terminal: String,
    open: Arc<Mutex<Option<Open>>>,
}

impl std::fmt::Debug for EJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EJournal").field("dir", &self.dir).finish()
    }
}

impl EJournal {
    /// A journal in `dir` (created if missing) for terminal `terminal`.
    pub fn open(dir: &Path, terminal: &str) -> Result<EJournal, JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError {
            path: dir.to_owned(),
            source,
        })?;
        Ok(EJournal {
            dir: dir.to_owned(),
            terminal: terminal.to_owned(),
            open: Arc::new(Mutex::new(None)),
        })
    }

    /// The directory of the daily files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one line (`time terminal text`), scrubbed, and fsyncs it. Runs the file I/O on
    /// the blocking pool so the caller's task is not held up by the disk.
    pub async fn write(&self, text: impl Into<String>) -> Result<(), JournalError> {
        let this = self.clone();
        let text = text.into();
        match tokio::task::spawn_blocking(move || this.write_blocking(&text)).await {
            Ok(r) => r,
            Err(e) => Err(JournalError {
                path: self.dir.clone(),
                source: std::io::Error::other(e),
            }),
        }
    }

    /// [`EJournal::write`], logging instead of returning a failure (for device events, where
    /// there is nobody to refuse).
    pub async fn note(&self, text: impl Into<String>) {
        if let Err(e) = self.write(text).await {
            tracing::error!(error = %e, "electronic journal write failed");
        }
    }

    fn write_blocking(&self, text: &str) -> Result<(), JournalError> {
        let now = chrono::Local::now();
        let date = now.format("%Y%m%d").to_string();
        let path = self.dir.join(format!("ej-{date}.log"));
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        let line = format!(
            "{} {} {}\n",
            now.format("%Y-%m-%dT%H:%M:%S%.3f%:z"),
            self.terminal,
            scrub(text).replace(['\n', '\r'], " ")
        );
        let mut guard = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|o| o.date != date) {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(err)?;
            *guard = Some(Open { date, file });
        }
        let open = guard.as_mut().expect("opened above");
        open.file.write_all(line.as_bytes()).map_err(err)?;
        open.file.sync_data().map_err(err)
    }
}

/// Masks a card number to first 6 / last 4 (`622588******1234`); numbers shorter than 12
/// digits are masked completely.
pub fn mask_pan(pan: &str) -> String {
    let digits: Vec<char> = pan.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 12 {
        return "*".repeat(digits.len());
    }
    let n = digits.len();
    digits[..6]
        .iter()
        .chain(std::iter::repeat_n(&'*', n - 10))
        .chain(digits[n - 4..].iter())
        .collect()
}

/// The masked card number of a track (ISO 7813 track 1 `B<PAN>^NAME^…`, track 2 `<PAN>=…`,
/// track 3 `<2 digits><PAN>=…` is not parsed: its PAN position varies), or `None` when the
/// track carries no recognisable PAN. Nothing after the PAN (name, expiry, service code,
/// discretionary data) is ever returned.
pub fn mask_track(track: &str) -> Option<String> {
    let body = track.strip_prefix(['B', 'b']).unwrap_or(track);
    let pan: String = body.chars().take_while(char::is_ascii_digit).collect();
    let rest = &body[pan.len()..];
    let ends_well = rest.is_empty() || rest.starts_with('=') || rest.starts_with('^');
    ((12..=19).contains(&pan.len()) && ends_well).then(|| mask_pan(&pan))
}

/// Masks every run of 12–19 digits and drops what follows a track separator inside a
/// digit run (`…=2512…`), the last line of defence against a caller's mistake.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let run: String = chars[start..i].iter().collect();
            if run.len() >= 12 {
                out.push_str(&mask_pan(&run));
                // Track 2 after the PAN: `=YYMM` service code and discretionary data.
                if i < chars.len() && (chars[i] == '=' || chars[i] == '^') {
                    while i < chars.len() && !chars[i].is_whitespace() {
                        i += 1;
                    }
                    out.push_str("=***");
                }
            } else {
                out.push_str(&run);
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_pans_and_tracks() {
        assert_eq!(mask_pan("6225880123451234"), "622588******1234");
        assert_eq!(mask_pan("1234"), "****");
        assert_eq!(
            mask_track("6225880123451234=25121010000000000").as_deref(),
            Some("622588******1234")
        );
        assert_eq!(
            mask_track("B6225880123451234^ZHANG/SAN^2512101").as_deref(),
            Some("622588******1234")
        );
        assert_eq!(mask_track("HELLO"), None);
    }

    #[test]
    fn scrubs_what_callers_missed() {
        let s = scrub("read card 6225880123451234=25121010000000000 ok, amount 10000");
        assert_eq!(s, "read card 622588******1234=*** ok, amount 10000");
        assert!(!s.contains("2512101"));
    }

    #[tokio::test]
    async fn appends_daily_lines() {
        let dir = tempfile::tempdir().unwrap();
        let j = EJournal::open(dir.path(), "T1").unwrap();
        j.write("first 6225880123451234").await.unwrap();
        j.write("second\nline").await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with("T1 first 622588******1234"));
        assert!(lines[1].ends_with("T1 second line"));
    }
}
