//! With the `console` feature, makes sure `webui/console/dist` holds a build of the console that
//! is newer than its sources, building it with npm when it is not: the binary embeds it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest(&e.path()))
        .max()
}

fn main() {
    if std::env::var_os("CARGO_FEATURE_CONSOLE").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let console = manifest.join("../../webui/console");
    let sources = [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.js",
        "public",
    ];
    for s in sources {
        println!("cargo:rerun-if-changed={}", console.join(s).display());
    }
    let index = console.join("dist/index.html");
    let built = std::fs::metadata(&index).and_then(|m| m.modified()).ok();
    let changed = sources
        .iter()
        .filter_map(|s| newest(&console.join(s)))
        .max();
    if built.is_some() && built >= changed {
        return;
    }
    let npm = |args: &[&str]| {
        let status = Command::new("npm")
            .args(args)
            .current_dir(&console)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "building the console needs Node.js 20+ and npm ({e}); install them, \
                     or build without the console: --no-default-features"
                )
            });
        assert!(
            status.success(),
            "npm {} failed in webui/console",
            args.join(" ")
        );
    };
    if !console.join("node_modules").is_dir() {
        npm(&["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    }
    npm(&["run", "build"]);
    assert!(
        index.is_file(),
        "npm run build did not produce {}",
        index.display()
    );
}
