//! The filer under kill -9 and a power cut, mid-upload: every acknowledged
//! file reads back identical, every listed file is whole (one of the
//! versions written to its path), and the chunks of uploads that never
//! committed are collected afterwards (live needles on the volume server
//! equal the chunks the namespace references).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::xfs::{LoopXfs, tools_present};
use common::*;
use serde_json::Value;

/// What was written to one path, in order: (seed, len, acknowledged).
type Writes = HashMap<String, Vec<(u64, usize, bool)>>;

fn filer_url(k: &Kelp) -> String {
    format!("http://127.0.0.1:{}", k.port("filer_port"))
}

fn start(dir: &Path, logs: &Path) -> Kelp {
    let dir_arg = format!("-dir={}", dir.display());
    let args = [
        "server",
        dir_arg.as_str(),
        "-master.port=0",
        "-volume.port=0",
        "-ip=127.0.0.1",
        "-filer",
        "-filer.port=0",
        "-filer.maxMB=1",
        "-filer.gcSeconds=1",
        "-s3",
        "-s3.port=0",
        "-log-level=info,kelp_filer=debug",
    ];
    let k = Kelp::start(&args, logs);
    wait_healthy(&k.master_url());
    k
}

/// Writers PUT files of 0 B to 2.5 MiB (1 MiB chunks) until `stop`; one
/// write in four replaces the writer's previous file.
fn load(filer: &str, writers: u64, seed: u64, stop: &AtomicBool, acked: &AtomicUsize) -> Writes {
    let writes = Mutex::new(Writes::new());
    std::thread::scope(|s| {
        for w in 0..writers {
            let writes = &writes;
            s.spawn(move || {
                let client = http();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let file = if n % 4 == 3 { n - 1 } else { n };
                    let path = format!("/load/w{w}/f{file}");
                    let s = seed + w * 1_000_000 + n;
                    let len = match s % 5 {
                        0 => (s % 3) as usize,
                        1 | 2 => 1 + (s % 8000) as usize,
                        _ => (1 << 20) + (s % (1 << 20)) as usize + (s % 2) as usize * (1 << 19),
                    };
                    writes
                        .lock()
                        .unwrap()
                        .entry(path.clone())
                        .or_default()
                        .push((s, len, false));
                    let ok = client
                        .put(format!("{filer}{path}"))
                        .body(blob(s, len))
                        .send()
                        .map(|r| r.status() == reqwest::StatusCode::CREATED)
                        .unwrap_or(false);
                    if ok {
                        acked.fetch_add(1, Ordering::Relaxed);
                        let mut g = writes.lock().unwrap();
                        let v = g.get_mut(&path).unwrap();
                        if let Some(x) = v.iter_mut().rev().find(|x| x.0 == s) {
                            x.2 = true;
                        }
                    }
                    n += 1;
                }
            });
        }
    });
    writes.into_inner().unwrap()
}

fn list(client: &reqwest::blocking::Client, filer: &str, dir: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut last = String::new();
    loop {
        let v: Value = client
            .get(format!("{filer}{dir}/?limit=100&lastFileName={last}"))
            .header("Accept", "application/json")
            .send()
            .unwrap()
            .json()
            .unwrap();
        let entries = v["Entries"].as_array().cloned().unwrap_or_default();
        for e in &entries {
            let path = e["FullPath"].as_str().unwrap().to_string();
            if e["Mode"].as_u64().unwrap() & (1 << 31) != 0 {
                out.extend(list(client, filer, &path));
            } else {
                out.push((path, e.clone()));
            }
        }
        if !v["ShouldDisplayLoadMore"].as_bool().unwrap() {
            return out;
        }
        last = v["LastFileName"].as_str().unwrap().to_string();
    }
}

/// Every path holds its last acknowledged write or a later attempt; every
/// listed file is one of its path's writes, whole.
fn verify(k: &Kelp, writes: &Writes) {
    verify_under(k, writes, "/load")
}

fn verify_under(k: &Kelp, writes: &Writes, root: &str) {
    let client = http();
    let filer = filer_url(k);
    let listed: HashMap<String, Value> = if writes.is_empty() {
        HashMap::new()
    } else {
        list(&client, &filer, root).into_iter().collect()
    };
    let mut checked = 0;
    for (path, tries) in writes {
        let last_ack = tries.iter().rposition(|t| t.2);
        let allowed: Vec<(u64, usize)> = match last_ack {
            Some(i) => tries[i..].iter().map(|t| (t.0, t.1)).collect(),
            None => tries.iter().map(|t| (t.0, t.1)).collect(),
        };
        let r = client.get(format!("{filer}{path}")).send().unwrap();
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            assert!(last_ack.is_none(), "{path}: acknowledged, then lost");
            assert!(
                !listed.contains_key(path),
                "{path} is listed but not readable"
            );
            continue;
        }
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{path}");
        let body = r.bytes().unwrap();
        assert!(
            allowed
                .iter()
                .any(|(s, len)| *len == body.len() && blob(*s, *len) == body),
            "{path}: {} bytes that are none of the versions written to it",
            body.len()
        );
        assert!(
            listed.contains_key(path),
            "{path} is readable but not listed"
        );
        checked += 1;
    }
    for path in listed.keys() {
        assert!(writes.contains_key(path), "{path} listed but never written");
    }
    eprintln!("{checked} files read back whole");
}

/// Waits until the volume server holds exactly the chunks the namespace
/// references: leaked chunks were collected, referenced ones kept.
fn no_leaks(k: &Kelp) {
    no_leaks_under(k, "/load")
}

fn no_leaks_under(k: &Kelp, root: &str) {
    let client = http();
    let filer = filer_url(k);
    let status = format!("{}/status", k.volume_url());
    wait_until(
        "leaked chunks to be collected",
        Duration::from_secs(60),
        || {
            let referenced: u64 = list(&client, &filer, root)
                .iter()
                .map(|(_, e)| e["chunks"].as_array().map_or(0, |c| c.len() as u64))
                .sum();
            let v: Value = client.get(&status).send().ok()?.json().ok()?;
            let live: u64 = v["Volumes"]
                .as_array()?
                .iter()
                .map(|vol| {
                    vol["FileCount"].as_u64().unwrap_or(0)
                        - vol["DeleteCount"].as_u64().unwrap_or(0)
                })
                .sum();
            eprintln!("live needles {live}, referenced chunks {referenced}");
            (live == referenced).then_some(())
        },
    );
}

/// The test's directory (removed when the guard drops); with
/// `KELP_KEEP_TMP=1` it is kept for a look.
fn test_dir() -> (Option<tempfile::TempDir>, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    if std::env::var_os("KELP_KEEP_TMP").is_some() {
        let p = tmp.keep();
        eprintln!("keeping {}", p.display());
        (None, p)
    } else {
        let p = tmp.path().to_path_buf();
        (Some(tmp), p)
    }
}

/// Lets the load run until 40 writes are acknowledged (at least 1 s, at
/// most 30 s), so the crash comes mid-load on a fast or a slow machine.
fn enough_writes(count: &AtomicUsize) {
    let t0 = Instant::now();
    while (count.load(Ordering::Relaxed) < 40 || t0.elapsed() < Duration::from_secs(1))
        && t0.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn filer_kill9_mid_upload_keeps_acknowledged_files_and_collects_leaks() {
    let (_guard, root) = test_dir();
    let dir = root.join("data");
    let logs = root.join("logs");
    let mut all = Writes::new();
    for round in 0..2u64 {
        let mut k = start(&dir, &logs);
        verify(&k, &all);
        let stop = AtomicBool::new(false);
        let count = AtomicUsize::new(0);
        let filer = filer_url(&k);
        let writes = std::thread::scope(|s| {
            let h = s.spawn(|| load(&filer, 6, (round + 1) << 40, &stop, &count));
            enough_writes(&count);
            k.kill9();
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap()
        });
        let acked = writes.values().flatten().filter(|t| t.2).count();
        eprintln!("round {round}: {acked} acknowledged writes before kill -9");
        assert!(acked > 20, "too few writes before the kill: {acked}");
        for (p, v) in writes {
            all.entry(p).or_default().extend(v);
        }
    }
    let k = start(&dir, &logs);
    verify(&k, &all);
    no_leaks(&k);
}

#[test]
fn filer_power_cut_keeps_acknowledged_files() {
    if !tools_present() {
        return;
    }
    let (_guard, root) = test_dir();
    let mut fs = LoopXfs::create(&root).expect("loop-mounted XFS");
    let dir = fs.mnt.join("data");
    let logs = root.join("logs");
    let mut k = start(&dir, &logs);
    let stop = AtomicBool::new(false);
    let count = AtomicUsize::new(0);
    let filer = filer_url(&k);
    let writes = std::thread::scope(|s| {
        let h = s.spawn(|| load(&filer, 6, 7 << 40, &stop, &count));
        enough_writes(&count);
        // Frozen first so that no fsync straddles the cut (docs/durability.md).
        k.freeze();
        fs.shutdown().expect("xfs shutdown");
        k.kill9();
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    let acked = writes.values().flatten().filter(|t| t.2).count();
    eprintln!("{acked} acknowledged writes before the power cut");
    assert!(acked > 20, "too few writes before the cut: {acked}");
    drop(k);
    fs.umount().expect("umount after shutdown");
    fs.mount().expect("remount");
    let k = start(&dir, &logs);
    verify(&k, &writes);
    no_leaks(&k);
}

fn s3_url(k: &Kelp) -> String {
    format!("http://127.0.0.1:{}", k.port("s3_port"))
}

/// S3 writers: single PUTs of up to 2.5 MiB and, one write in four, a
/// multipart upload of two parts (5 MiB + a little), into bucket `load`
/// (the filer's `/buckets/load`) until `stop`.
fn s3_load(s3: &str, writers: u64, seed: u64, stop: &AtomicBool, acked: &AtomicUsize) -> Writes {
    let writes = Mutex::new(Writes::new());
    std::thread::scope(|sc| {
        for w in 0..writers {
            let writes = &writes;
            sc.spawn(move || {
                let client = http();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}/o{}", n % 6);
                    let s = seed + w * 1_000_000 + n;
                    let multipart = n % 4 == 3;
                    let len = if multipart {
                        (5 << 20) + 1000
                    } else {
                        (s % (2_500_000)) as usize
                    };
                    let path = format!("/buckets/load/{key}");
                    writes
                        .lock()
                        .unwrap()
                        .entry(path.clone())
                        .or_default()
                        .push((s, len, false));
                    let data = blob(s, len);
                    let ok = if multipart {
                        s3_multipart(&client, s3, &key, &data)
                    } else {
                        client
                            .put(format!("{s3}/load/{key}"))
                            .body(data)
                            .send()
                            .map(|r| r.status().is_success())
                            .unwrap_or(false)
                    };
                    if ok {
                        acked.fetch_add(1, Ordering::Relaxed);
                        let mut g = writes.lock().unwrap();
                        if let Some(x) = g
                            .get_mut(&path)
                            .unwrap()
                            .iter_mut()
                            .rev()
                            .find(|x| x.0 == s)
                        {
                            x.2 = true;
                        }
                    }
                    n += 1;
                }
            });
        }
    });
    writes.into_inner().unwrap()
}

fn s3_multipart(c: &reqwest::blocking::Client, s3: &str, key: &str, data: &[u8]) -> bool {
    let go = || -> Option<bool> {
        let xml = c
            .post(format!("{s3}/load/{key}?uploads"))
            .send()
            .ok()?
            .text()
            .ok()?;
        let id = xml
            .split("<UploadId>")
            .nth(1)?
            .split("</UploadId>")
            .next()?
            .to_string();
        let mut etags = Vec::new();
        for (i, part) in [&data[..5 << 20], &data[5 << 20..]].iter().enumerate() {
            let r = c
                .put(format!(
                    "{s3}/load/{key}?partNumber={}&uploadId={id}",
                    i + 1
                ))
                .body(part.to_vec())
                .send()
                .ok()?;
            if !r.status().is_success() {
                return Some(false);
            }
            etags.push(r.headers()["etag"].to_str().ok()?.to_string());
        }
        let body: String = etags
            .iter()
            .enumerate()
            .map(|(i, e)| {
                format!(
                    "<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>",
                    i + 1
                )
            })
            .collect();
        let r = c
            .post(format!("{s3}/load/{key}?uploadId={id}"))
            .body(format!(
                "<CompleteMultipartUpload>{body}</CompleteMultipartUpload>"
            ))
            .send()
            .ok()?;
        Some(r.status().is_success())
    };
    go().unwrap_or(false)
}

/// kill -9 of the one-process server while S3 clients upload (single and
/// multipart): every acknowledged object reads back identical through S3,
/// nothing partial is listed, and leaked chunks (of cut uploads and
/// unfinished multipart parts, once aborted) are collected.
#[test]
fn s3_kill9_mid_upload_keeps_acknowledged_objects_and_collects_leaks() {
    let (_guard, root) = test_dir();
    let dir = root.join("data");
    let logs = root.join("logs");
    let mut k = start(&dir, &logs);
    assert!(
        http()
            .put(format!("{}/load", s3_url(&k)))
            .body("")
            .send()
            .unwrap()
            .status()
            .is_success()
    );
    let stop = AtomicBool::new(false);
    let count = AtomicUsize::new(0);
    let s3 = s3_url(&k);
    let writes = std::thread::scope(|s| {
        let h = s.spawn(|| s3_load(&s3, 4, 9 << 40, &stop, &count));
        enough_writes(&count);
        k.kill9();
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    let acked = writes.values().flatten().filter(|t| t.2).count();
    eprintln!("{acked} acknowledged S3 writes before kill -9");
    let k = start(&dir, &logs);
    // Through the filer: whole files, listed or not, as for the filer test.
    verify_under(&k, &writes, "/buckets/load");
    // Through S3: the same bytes.
    let c = http();
    let s3 = s3_url(&k);
    for (path, tries) in &writes {
        let key = path.strip_prefix("/buckets/load/").unwrap();
        let r = c.get(format!("{s3}/load/{key}")).send().unwrap();
        if let Some(i) = tries.iter().rposition(|t| t.2) {
            assert_eq!(r.status(), reqwest::StatusCode::OK, "{key}");
            let body = r.bytes().unwrap();
            assert!(
                tries[i..]
                    .iter()
                    .any(|(s, len, _)| *len == body.len() && blob(*s, *len) == body),
                "{key}: not a version written"
            );
        }
    }
    // Unfinished multipart uploads are aborted as a client would, then
    // every chunk left is one an object references.
    let list = c
        .get(format!("{s3}/load?uploads"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for chunk in list.split("<Upload>").skip(1) {
        let key = chunk
            .split("<Key>")
            .nth(1)
            .unwrap()
            .split("</Key>")
            .next()
            .unwrap();
        let id = chunk
            .split("<UploadId>")
            .nth(1)
            .unwrap()
            .split("</UploadId>")
            .next()
            .unwrap();
        let r = c
            .delete(format!("{s3}/load/{key}?uploadId={id}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::NO_CONTENT);
    }
    no_leaks_under(&k, "/buckets/load");
}
