//! The business package: the pages and their SJSL flows (seed 001 §4.3.1) that terminal-native
//! serves, and what the package says about itself.
//!
//! A package is a directory (`business_package` in the configuration). Its build may write
//! `openteller-package.json` at the top, `{"name": "openteller-kiosk", "version": "0.1.0"}`
//! (the kiosk's Vite build does); other members are ignored. terminal-native reads it once
//! when the configuration is validated, journals it at start and shows it in `terminal.status`
//! as `businessPackage`, so the pages, the keeper and later the monitor know which flows run.
//!
//! [`PackageInfo`] is the seam for the backoffice's version check (a later issue): the check
//! compares it with the version the backoffice assigns to the terminal and, when they differ,
//! fetches the new package into a fresh directory and points the host at it.

use std::path::Path;

use serde::Serialize;

/// The manifest's file name inside the package directory.
pub const MANIFEST: &str = "openteller-package.json";
/// Manifests above this size are refused (the file is two short strings).
const MAX_MANIFEST_BYTES: u64 = 16 * 1024;

/// Which business package runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageInfo {
    /// The manifest's `name`, or the directory's name when there is no manifest.
    pub name: String,
    /// The manifest's `version`; `None` without a manifest (an unversioned package).
    pub version: Option<String>,
}

struct Manifest {
    name: String,
    version: String,
}

/// A manifest text: 1–64 (name) or 1–32 (version) printable ASCII characters, no spaces.
fn check_text(what: &str, value: &str, max: usize) -> Result<(), String> {
    let ok = !value.is_empty() && value.len() <= max && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{MANIFEST}: {what} {value:?} must be 1-{max} printable ASCII characters without spaces"
        ))
    }
}

impl PackageInfo {
    /// Reads the package at `dir`: its manifest when there is one, else the directory's name
    /// without a version. A manifest that cannot be read or is malformed is an error (the
    /// package is broken; serving it would hide that).
    pub fn read(dir: &Path) -> Result<PackageInfo, String> {
        let path = dir.join(MANIFEST);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "business-package".to_owned());
                return Ok(PackageInfo {
                    name,
                    version: None,
                });
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if !meta.is_file() || meta.len() > MAX_MANIFEST_BYTES {
            return Err(format!(
                "{} must be a file of at most {MAX_MANIFEST_BYTES} bytes",
                path.display()
            ));
        }
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bad = |e: &dyn std::fmt::Display| {
            format!(
                "{}: not a JSON object with string members name and version: {e}",
                path.display()
            )
        };
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&text).map_err(|e| bad(&e))?;
        let member = |key: &str| {
            object
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("{key} is missing or not a string")))
        };
        let m = Manifest {
            name: member("name")?,
            version: member("version")?,
        };
        check_text("name", &m.name, 64)?;
        check_text("version", &m.version, 32)?;
        Ok(PackageInfo {
            name: m.name,
            version: Some(m.version),
        })
    }

    /// `name version` (or `name unversioned`) for the journal.
    pub fn label(&self) -> String {
        format!(
            "{} {}",
            self.name,
            self.version.as_deref().unwrap_or("unversioned")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(manifest: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::Builder::new().prefix("kiosk").tempdir().unwrap();
        if let Some(m) = manifest {
            std::fs::write(dir.path().join(MANIFEST), m).unwrap();
        }
        dir
    }

    #[test]
    fn a_manifest_names_the_package_and_its_version() {
        let dir = package(Some(
            r#"{"name": "openteller-kiosk", "version": "0.1.0", "builtAt": "x"}"#,
        ));
        let info = PackageInfo::read(dir.path()).unwrap();
        assert_eq!(info.name, "openteller-kiosk");
        assert_eq!(info.version.as_deref(), Some("0.1.0"));
        assert_eq!(info.label(), "openteller-kiosk 0.1.0");
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            serde_json::json!({"name": "openteller-kiosk", "version": "0.1.0"})
        );
    }

    #[test]
    fn without_a_manifest_the_package_is_unversioned() {
        let dir = package(None);
        let info = PackageInfo::read(dir.path()).unwrap();
        assert!(info.name.starts_with("kiosk"), "{info:?}");
        assert_eq!(info.version, None);
        assert!(info.label().ends_with(" unversioned"));
    }

    #[test]
    fn a_broken_manifest_is_refused() {
        for bad in [
            "not json",
            r#"{"name": "kiosk"}"#,
            r#"{"name": 1, "version": "1"}"#,
            r#"{"name": "", "version": "1"}"#,
            r#"{"name": "kiosk", "version": "1 2"}"#,
            r#"["kiosk", "1"]"#,
        ] {
            let dir = package(Some(bad));
            let e = PackageInfo::read(dir.path()).unwrap_err();
            assert!(e.contains(MANIFEST), "{bad}: {e}");
        }
        let long = format!(r#"{{"name": "{}", "version": "1"}}"#, "n".repeat(65));
        assert!(PackageInfo::read(package(Some(&long)).path()).is_err());
        let dir = package(None);
        std::fs::create_dir(dir.path().join(MANIFEST)).unwrap();
        assert!(PackageInfo::read(dir.path()).is_err());
    }
}
