//! A loop-mounted XFS for power-cut tests: `shutdown` (`xfs_io -x -c
//! shutdown`) drops everything not yet fsynced, as a power cut does.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{is_root, require_tool, which};

pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A loop-mounted XFS image, unmounted when dropped.
pub struct LoopXfs {
    image: PathBuf,
    pub mnt: PathBuf,
    mounted: bool,
}

impl LoopXfs {
    pub fn create(root: &Path) -> Result<Self, String> {
        let image = root.join("xfs.img");
        let mnt = root.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(512 << 20).map_err(|e| e.to_string())?;
        run("mkfs.xfs", &["-q", "-f", image.to_str().unwrap()])?;
        let mut fs = LoopXfs {
            image,
            mnt,
            mounted: false,
        };
        fs.mount()?;
        Ok(fs)
    }

    pub fn mount(&mut self) -> Result<(), String> {
        run(
            "mount",
            &[
                "-o",
                "loop",
                self.image.to_str().unwrap(),
                self.mnt.to_str().unwrap(),
            ],
        )?;
        self.mounted = true;
        Ok(())
    }

    pub fn umount(&mut self) -> Result<(), String> {
        run("umount", &[self.mnt.to_str().unwrap()])?;
        self.mounted = false;
        Ok(())
    }

    /// The power cut: the filesystem stops and unflushed data is dropped.
    pub fn shutdown(&self) -> Result<(), String> {
        run(
            "xfs_io",
            &["-x", "-c", "shutdown", self.mnt.to_str().unwrap()],
        )
    }
}

impl Drop for LoopXfs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

pub fn tools_present() -> bool {
    let root = is_root();
    let tools = ["mkfs.xfs", "xfs_io", "mount", "umount"]
        .iter()
        .all(|t| which(t).is_some());
    let ok = root && tools && Path::new("/dev/loop-control").exists();
    require_tool(
        "root, loop devices and xfsprogs (mkfs.xfs, xfs_io)",
        ok.then(PathBuf::new),
    )
    .is_some()
}
