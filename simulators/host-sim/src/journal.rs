//! The JSON-lines journal of applied transactions, written by one owned thread so that
//! request processing never waits for the disk.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tracing::error;

use crate::state::JournalEntry;

/// The journal writer thread. Dropping every sender ends it after it wrote what was queued.
pub(crate) struct JournalWriter {
    handle: JoinHandle<()>,
}

impl JournalWriter {
    /// Opens (appends to) `path` and starts the writer.
    pub(crate) fn open(
        path: &Path,
    ) -> std::io::Result<(JournalWriter, mpsc::Sender<JournalEntry>)> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("host-sim-journal".into())
            .spawn(move || write_loop(file, rx))?;
        Ok((JournalWriter { handle }, tx))
    }

    /// Waits until everything queued is written (call after the last sender is dropped).
    pub(crate) fn finish(self) {
        if self.handle.join().is_err() {
            error!("the journal writer panicked");
        }
    }
}

fn write_loop(file: File, rx: mpsc::Receiver<JournalEntry>) {
    let mut out = BufWriter::new(file);
    let write = |out: &mut BufWriter<File>, e: &JournalEntry| -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")
    };
    while let Ok(first) = rx.recv() {
        let mut result = write(&mut out, &first);
        while let Ok(next) = rx.try_recv() {
            result = result.and_then(|()| write(&mut out, &next));
        }
        if let Err(e) = result.and_then(|()| out.flush()) {
            error!(error = %e, "cannot write the journal");
        }
    }
    let _ = out.flush();
}
