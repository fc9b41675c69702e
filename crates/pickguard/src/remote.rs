//! `pickguard scan https://… | s3://…`: remote files read through
//! `pickguard-remote`, scanned by the same scanner as local ones.

use pickguard_remote::{Fetched, Location, Object, Options};
use pickguard_scan::{FileReport, Scanner};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Scans that ask for more bytes after a scan: each round fetches what the
/// last one found it needed (an archive member nothing had referenced).
const ROUNDS: usize = 4;

fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("starting the network runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// `Some` when `arg` is a remote address: the objects it names, or the
/// error report that stands for them.
pub fn objects(
    arg: &std::ffi::OsStr,
    opts: &Options,
) -> Option<Result<Vec<Object>, Box<FileReport>>> {
    let s = arg.to_str()?;
    let loc = Location::parse(s)?;
    Some(
        loc.map_err(|e| e.to_string())
            .and_then(|loc| {
                let rt = runtime()?;
                rt.block_on(pickguard_remote::open(&loc, opts))
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| Box::new(FileReport::error(s, e))),
    )
}

/// Fetch what the scan needs of `object` and scan it.
pub fn scan(scanner: &Scanner, object: Object, opts: &Options, timeout: Duration) -> FileReport {
    let shown = object.display.clone();
    // The scanner names the file by its path (the extension says what a
    // loader would do with it); the query string is not part of that.
    let name = shown.trim_end_matches("?…").to_owned();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return FileReport::error(&shown, e),
    };
    let mut f: Fetched = match rt.block_on(pickguard_remote::prepare(
        object,
        opts,
        &scanner.options.pickle,
    )) {
        Ok(f) => f,
        Err(e) => return FileReport::error(&shown, e.to_string()),
    };
    let mut round = 0;
    loop {
        let mut s = scanner.clone();
        let absent = f.absent();
        s.options.absent = (!absent.is_empty()).then(|| Arc::new(absent));
        s.options.pickle.limits.deadline = Some(Instant::now() + timeout);
        let mut r = s.scan_image(&name, f.data(), None);
        r.path = shown.clone();
        round += 1;
        if !r.missing.is_empty() && round < ROUNDS {
            let want: Vec<_> = r.missing.iter().map(|&(a, b)| a..b).collect();
            if let Err(e) = rt.block_on(f.ensure(want)) {
                return FileReport::error(&shown, e.to_string());
            }
            continue;
        }
        r.fetched = Some(pickguard_scan::Fetched {
            bytes: f.bytes,
            requests: f.requests,
        });
        return r;
    }
}
