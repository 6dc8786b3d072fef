//! Container logs: the writer the shim runs (containerd's `binary://` logging protocol) and
//! the readers `service logs` uses.
//!
//! The shim starts the log binary with the container's stdout pipe as fd 3, its stderr pipe
//! as fd 4, and a pipe on fd 5 that the binary writes to (or closes) once it is ready; only
//! then does the container start. The binary lives as long as the container's IO, outside
//! the rswarm daemon, so logs keep flowing across daemon restarts. When the task is deleted
//! the shim closes the pipes and sends SIGTERM; we keep draining until EOF so no line is lost.
//!
//! Each line becomes one JSON object per line in the log file:
//! `{"t":"2026-11-02T10:00:00.123456789Z","s":"stdout","l":"the line"}`, with `"p":true` on
//! the pieces of a line longer than [`MAX_LINE`] but its last.
//!
//! The descriptors are reopened through /proc/self/fd instead of adopted with `from_raw_fd`,
//! which keeps this crate free of `unsafe` (reopening a pipe end gives the same pipe).

use futures::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use time::format_description::well_known::Rfc3339;

/// Longer lines are split into pieces of this many bytes (Docker's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the writer read it, RFC 3339 with nanoseconds, UTC.
    #[serde(rename = "t")]
    pub time: String,
    #[serde(rename = "s")]
    pub stream: LogStream,
    /// Without its newline; invalid UTF-8 replaced.
    #[serde(rename = "l")]
    pub line: String,
    /// A piece of a longer line; the line goes on in the next record.
    #[serde(rename = "p", default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl LogLine {
    pub fn timestamp(&self) -> Option<SystemTime> {
        time::OffsetDateTime::parse(&self.time, &Rfc3339)
            .ok()
            .map(SystemTime::from)
    }
}

/// The log-writer mode: reads fds 3 and 4 until both reach EOF, appending to `path`.
pub fn run_log_writer(path: &Path) -> io::Result<()> {
    // A SIGTERM handler, so the shim's SIGTERM does not end us before the pipes are
    // drained (they are closed just before it is sent). The runtime only hosts the handler.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let sigterm = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let sink = Arc::new(Mutex::new(file));
    let stdout = File::open("/proc/self/fd/3")?;
    let stderr = File::open("/proc/self/fd/4")?;

    // Ready: the shim reads one byte (or EOF) from fd 5 before starting the container.
    // Outside a shim there is no fd 5, and nobody waits.
    if let Ok(mut ready) = OpenOptions::new().write(true).open("/proc/self/fd/5") {
        let _ = ready.write_all(b"1");
    }

    let err_sink = sink.clone();
    let err_thread = std::thread::spawn(move || copy_lines(stderr, LogStream::Stderr, &err_sink));
    let out_result = copy_lines(stdout, LogStream::Stdout, &sink);
    let err_result = err_thread
        .join()
        .map_err(|_| io::Error::other("stderr copier panicked"))?;
    drop(sigterm);
    drop(rt);
    out_result.and(err_result)
}

/// Copies `src` line by line into `sink` as JSON records until EOF.
pub fn copy_lines(src: impl Read, stream: LogStream, sink: &Mutex<File>) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, src);
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let (done, used) = {
            let buf = match reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                (true, 0)
            } else {
                let room = MAX_LINE - line.len();
                match buf.iter().take(room).position(|b| *b == b'\n') {
                    Some(i) => {
                        line.extend_from_slice(&buf[..i]);
                        write_record(sink, stream, &line, false)?;
                        line.clear();
                        (false, i + 1)
                    }
                    None => {
                        let n = buf.len().min(room);
                        line.extend_from_slice(&buf[..n]);
                        if line.len() == MAX_LINE {
                            write_record(sink, stream, &line, true)?;
                            line.clear();
                        }
                        (false, n)
                    }
                }
            }
        };
        if done {
            if !line.is_empty() {
                write_record(sink, stream, &line, false)?;
            }
            return Ok(());
        }
        reader.consume(used);
    }
}

fn write_record(
    sink: &Mutex<File>,
    stream: LogStream,
    line: &[u8],
    partial: bool,
) -> io::Result<()> {
    let rec = LogLine {
        time: now_rfc3339(),
        stream,
        line: String::from_utf8_lossy(line).into_owned(),
        partial,
    };
    let mut json = serde_json::to_vec(&rec).map_err(io::Error::other)?;
    json.push(b'\n');
    let mut f = sink
        .lock()
        .map_err(|_| io::Error::other("log file lock poisoned"))?;
    // One write per record on an O_APPEND file: readers never see half a record from us.
    f.write_all(&json)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Reads a log file: all its lines, or the last `tail`; also returns the offset after the
/// last complete record, from which [`follow_logs`] goes on. A missing file has no lines.
pub fn read_logs(path: &Path, tail: Option<usize>) -> io::Result<(Vec<LogLine>, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let (lines, used) = parse_records(&data);
    let lines = match tail {
        Some(n) if n < lines.len() => lines[lines.len() - n..].to_vec(),
        _ => lines,
    };
    Ok((lines, used as u64))
}

/// Complete records in `data` (a partly written last line is left for later) and the
/// number of bytes they span. Lines that are not records are skipped.
fn parse_records(data: &[u8]) -> (Vec<LogLine>, usize) {
    let end = match data.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => return (Vec::new(), 0),
    };
    let lines = data[..end]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<LogLine>(l).ok())
        .collect();
    (lines, end)
}

/// New lines of a log file from `offset` on, as they are written (polling); never ends by
/// itself: drop it to stop following.
pub fn follow_logs(path: PathBuf, offset: u64) -> impl Stream<Item = io::Result<LogLine>> {
    struct State {
        path: PathBuf,
        offset: u64,
        pending: VecDeque<LogLine>,
    }
    let st = State {
        path,
        offset,
        pending: VecDeque::new(),
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(l) = st.pending.pop_front() {
                return Some((Ok(l), st));
            }
            match read_from(&st.path, st.offset) {
                Ok(Some((lines, used))) => {
                    st.offset += used as u64;
                    st.pending.extend(lines);
                    if !st.pending.is_empty() {
                        continue;
                    }
                }
                Ok(None) => {}
                Err(e) => return Some((Err(e), st)),
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    })
}

fn read_from(path: &Path, offset: u64) -> io::Result<Option<(Vec<LogLine>, usize)>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if f.metadata()?.len() <= offset {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let (lines, used) = parse_records(&data);
    Ok(Some((lines, used)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn tmp() -> tempfile::TempDir {
        match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        }
    }

    #[test]
    fn lines_become_records_and_read_back() {
        let dir = tmp();
        let path = dir.path().join("log");
        let sink = Mutex::new(File::create(&path).expect("create"));
        copy_lines(
            &b"one\ntwo\nlast without newline"[..],
            LogStream::Stdout,
            &sink,
        )
        .expect("copy");
        copy_lines(&b"oops\n"[..], LogStream::Stderr, &sink).expect("copy");
        let (lines, off) = read_logs(&path, None).expect("read");
        let got: Vec<(LogStream, &str)> =
            lines.iter().map(|l| (l.stream, l.line.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (LogStream::Stdout, "one"),
                (LogStream::Stdout, "two"),
                (LogStream::Stdout, "last without newline"),
                (LogStream::Stderr, "oops"),
            ]
        );
        assert!(lines[0].timestamp().is_some());
        assert_eq!(off, std::fs::metadata(&path).expect("meta").len());
        let (tail, _) = read_logs(&path, Some(1)).expect("read");
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].line, "oops");
        let raw = std::fs::read_to_string(&path).expect("raw");
        assert!(
            raw.starts_with(r#"{"t":""#) && raw.contains(r#""s":"stderr","l":"oops"}"#),
            "{raw}"
        );
    }

    #[test]
    fn long_lines_are_split() {
        let dir = tmp();
        let path = dir.path().join("log");
        let sink = Mutex::new(File::create(&path).expect("create"));
        let mut input = vec![b'x'; MAX_LINE * 2 + 10];
        input.push(b'\n');
        copy_lines(&input[..], LogStream::Stdout, &sink).expect("copy");
        let (lines, _) = read_logs(&path, None).expect("read");
        let shape: Vec<(usize, bool)> = lines.iter().map(|l| (l.line.len(), l.partial)).collect();
        assert_eq!(shape, vec![(MAX_LINE, true), (MAX_LINE, true), (10, false)]);
    }

    #[tokio::test]
    async fn follow_sees_new_lines() {
        let dir = tmp();
        let path = dir.path().join("log");
        let sink = Mutex::new(File::create(&path).expect("create"));
        copy_lines(&b"a\n"[..], LogStream::Stdout, &sink).expect("copy");
        let (_, off) = read_logs(&path, None).expect("read");
        let mut s = Box::pin(follow_logs(path.clone(), off));
        copy_lines(&b"b\n"[..], LogStream::Stderr, &sink).expect("copy");
        let next = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
        match next {
            Ok(Some(Ok(l))) => assert_eq!((l.stream, l.line.as_str()), (LogStream::Stderr, "b")),
            other => panic!("no line followed: {other:?}"),
        }
    }
}
