//! SeaweedFS users type Go-style flags: a single dash, `=` or a space before
//! the value (`-dir=/data`, `-master.port 9333`). clap wants two dashes for
//! long flags, so argv is rewritten before parsing: `-name[=v]` becomes
//! `--name[=v]` when `name` is longer than one character. One-letter short
//! flags (`-h`, `-V`) and everything after a bare `--` are left alone.

use std::ffi::OsString;

pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for arg in args {
        if passthrough {
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            if s == "--" {
                passthrough = true;
                return None;
            }
            let rest = s.strip_prefix('-')?;
            if rest.starts_with('-') {
                return None;
            }
            let name = rest.split('=').next().unwrap_or("");
            let long_name = name.len() > 1 && name.starts_with(|c: char| c.is_ascii_alphabetic());
            long_name.then(|| OsString::from(format!("-{s}")))
        });
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize(args.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn go_style_flags_become_long_flags() {
        assert_eq!(
            norm(&[
                "kelp",
                "server",
                "-dir=/d",
                "-master.port",
                "9333",
                "--ip=x",
                "-h",
                "-1"
            ]),
            [
                "kelp",
                "server",
                "--dir=/d",
                "--master.port",
                "9333",
                "--ip=x",
                "-h",
                "-1"
            ]
        );
        assert_eq!(norm(&["kelp", "--", "-dir"]), ["kelp", "--", "-dir"]);
    }
}
