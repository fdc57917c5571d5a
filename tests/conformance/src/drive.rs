//! The driver: a bundle per case, every case under every runtime, counts
//! per area side by side, and the cases the last runtime fails while the
//! first passes (a failure unless documented).

use crate::{cases, lifecycle, spec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How one case went under one runtime.
pub struct Outcome {
    pub passed: bool,
    pub detail: String,
}

impl Outcome {
    pub fn fail(detail: impl Into<String>) -> Self {
        Outcome {
            passed: false,
            detail: detail.into(),
        }
    }
}

/// Where a runtime runs: its binary, the base rootfs, a scratch directory.
pub struct Bench {
    pub runtime: String,
    pub rootfs: PathBuf,
    pub work: PathBuf,
}

/// A command's exit status (None: timed out or could not run) and output.
pub struct Ran {
    pub code: Option<i32>,
    pub out: String,
}

/// Runs a command with its output captured, ended after `limit`.
pub fn run_cmd(cmd: &mut Command, limit: Duration) -> Ran {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                code: None,
                out: e.to_string(),
            }
        }
    };
    let mut readers = Vec::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let mut p = pipe;
        readers.push(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = p.read_to_string(&mut s);
            s
        }));
    }
    let deadline = Instant::now() + limit;
    let code = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = readers
        .into_iter()
        .filter_map(|r| r.join().ok())
        .collect::<Vec<_>>()
        .join("");
    Ran { code, out }
}

impl Bench {
    pub fn cmd(&self, args: &[&str]) -> Ran {
        run_cmd(
            Command::new(&self.runtime).args(args),
            Duration::from_secs(120),
        )
    }

    /// A fresh bundle: the rootfs, the checker and `config` beside it.
    pub fn bundle(&self, name: &str, config: &Value) -> std::io::Result<PathBuf> {
        let b = self.work.join(name);
        let _ = std::fs::remove_dir_all(&b);
        std::fs::create_dir_all(&b)?;
        let st = Command::new("cp")
            .arg("-a")
            .arg(&self.rootfs)
            .arg(b.join("rootfs"))
            .status()?;
        if !st.success() {
            return Err(std::io::Error::other("copy the rootfs"));
        }
        let dir = b.join("rootfs").join(crate::DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy("/proc/self/exe", dir.join("oci-conformance"))?;
        self.write_config(&b, config)?;
        Ok(b)
    }

    pub fn write_config(&self, bundle: &Path, config: &Value) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
        std::fs::write(bundle.join("config.json"), &text)?;
        let inside = bundle
            .join("rootfs")
            .join(crate::DIR.trim_start_matches('/'))
            .join("config.json");
        std::fs::write(inside, &text)
    }

    fn check_case(&self, c: &cases::Case, id: &str) -> Outcome {
        let mut config = spec::base();
        let dir = self.work.join(id);
        (c.config)(&mut config, &dir);
        let b = match self.bundle(id, &config) {
            Ok(b) => b,
            Err(e) => return Outcome::fail(format!("bundle: {e}")),
        };
        if let Some(prep) = c.prepare {
            if let Err(e) = prep(&b) {
                return Outcome::fail(format!("prepare: {e}"));
            }
        }
        let b_str = b.to_string_lossy().to_string();
        let ran = self.cmd(&["run", "--bundle", &b_str, id]);
        let _ = self.cmd(&["delete", "--force", id]);
        // A case's own mount of a bind source goes with the bundle.
        let _ = Command::new("umount")
            .arg(b.join("src"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&b);
        let failures: Vec<&str> = ran
            .out
            .lines()
            .filter(|l| l.starts_with("not ok "))
            .collect();
        let checked = ran.out.lines().any(|l| l.starts_with("checked: "));
        if ran.code == Some(0) && checked && failures.is_empty() {
            let n = ran.out.lines().filter(|l| l.starts_with("ok ")).count();
            Outcome {
                passed: true,
                detail: format!("{n} assertions"),
            }
        } else if !failures.is_empty() {
            Outcome::fail(failures.join("; "))
        } else {
            Outcome::fail(format!(
                "exit {:?}: {}",
                ran.code,
                ran.out.lines().last().unwrap_or("")
            ))
        }
    }
}

struct Args {
    rootfs: PathBuf,
    only: Option<String>,
    differences: Option<PathBuf>,
    runtimes: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        rootfs: PathBuf::new(),
        only: None,
        differences: None,
        runtimes: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{x} needs a value"));
        match x.as_str() {
            "--rootfs" => a.rootfs = PathBuf::from(val()?),
            "--only" => a.only = Some(val()?),
            "--differences" => a.differences = Some(PathBuf::from(val()?)),
            _ => a.runtimes.push(x.clone()),
        }
    }
    if a.rootfs.as_os_str().is_empty() || a.runtimes.is_empty() {
        return Err("drive --rootfs DIR [--only TEXT] [--differences FILE] RUNTIME...".into());
    }
    Ok(a)
}

/// `AREA/NAME reason` per line; # starts a comment.
fn differences(path: &Option<PathBuf>) -> BTreeMap<String, String> {
    let Some(p) = path else {
        return BTreeMap::new();
    };
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once(char::is_whitespace)?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

fn short(runtime: &str) -> String {
    runtime.rsplit('/').next().unwrap_or(runtime).to_string()
}

pub fn run(raw: &[String]) -> i32 {
    let args = match parse(raw) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("oci-conformance: {e}");
            return 2;
        }
    };
    let documented = differences(&args.differences);
    let wanted = |name: &str| args.only.as_ref().is_none_or(|o| name.contains(o.as_str()));
    // (area/name) -> outcome per runtime, in order.
    let mut results: BTreeMap<(String, String), Vec<Outcome>> = BTreeMap::new();
    for rt in &args.runtimes {
        let bench = Bench {
            runtime: rt.clone(),
            rootfs: args.rootfs.clone(),
            work: PathBuf::from(format!("/tmp/oci-conformance-{}", short(rt))),
        };
        let _ = std::fs::create_dir_all(&bench.work);
        for c in cases::all() {
            let key = format!("{}/{}", c.area, c.name);
            if !wanted(&key) {
                continue;
            }
            let o = bench.check_case(&c, &format!("conf-{}", c.name));
            report(rt, &key, &o);
            results
                .entry((c.area.to_string(), c.name.to_string()))
                .or_default()
                .push(o);
        }
        for (name, f) in lifecycle::all() {
            let key = format!("lifecycle/{name}");
            if !wanted(&key) {
                continue;
            }
            let o = f(&bench, &format!("conf-{name}"));
            report(rt, &key, &o);
            results
                .entry(("lifecycle".to_string(), name.to_string()))
                .or_default()
                .push(o);
        }
        let _ = std::fs::remove_dir_all(&bench.work);
    }
    summarize(&args.runtimes, &results, &documented)
}

fn report(rt: &str, key: &str, o: &Outcome) {
    let verdict = if o.passed { "pass" } else { "FAIL" };
    println!("{verdict} {} {key}: {}", short(rt), o.detail);
}

fn summarize(
    runtimes: &[String],
    results: &BTreeMap<(String, String), Vec<Outcome>>,
    documented: &BTreeMap<String, String>,
) -> i32 {
    let mut areas: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for ((area, _), outs) in results {
        let row = areas
            .entry(area)
            .or_insert_with(|| vec![(0, 0); runtimes.len()]);
        for (i, o) in outs.iter().enumerate() {
            row[i].1 += 1;
            if o.passed {
                row[i].0 += 1;
            }
        }
    }
    println!();
    print!("{:<14}", "area");
    for rt in runtimes {
        print!(" {:>12}", short(rt));
    }
    println!();
    let mut totals = vec![(0, 0); runtimes.len()];
    for (area, row) in &areas {
        print!("{area:<14}");
        for (i, (p, t)) in row.iter().enumerate() {
            print!(" {:>12}", format!("{p}/{t}"));
            totals[i].0 += p;
            totals[i].1 += t;
        }
        println!();
    }
    print!("{:<14}", "total");
    for (p, t) in &totals {
        print!(" {:>12}", format!("{p}/{t}"));
    }
    println!();
    let mut undocumented = 0;
    if runtimes.len() > 1 {
        for ((area, name), outs) in results {
            let (Some(first), Some(last)) = (outs.first(), outs.last()) else {
                continue;
            };
            if first.passed && !last.passed {
                let key = format!("{area}/{name}");
                match documented.get(&key) {
                    Some(why) => println!("documented difference {key}: {why}"),
                    None => {
                        undocumented += 1;
                        println!(
                            "REGRESSION {key}: {} fails where {} passes: {}",
                            short(&runtimes[runtimes.len() - 1]),
                            short(&runtimes[0]),
                            last.detail
                        );
                    }
                }
            }
        }
    }
    for (rt, (p, t)) in runtimes.iter().zip(&totals) {
        println!("{}: {p} of {t} cases pass", short(rt));
    }
    if undocumented > 0 {
        1
    } else {
        0
    }
}
