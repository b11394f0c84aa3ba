//! A service provider written in C (`examples/minimal_sp.c`, the vendor example of `docs/lfs.md`)
//! is compiled into a shared library and driven through the safe host: the ABI works from C,
//! not only between Rust crates.
//!
//! Needs a C compiler (`$CC`, else `cc`); without one the test says so and passes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use openteller_lfs_abi::ffi::*;
use openteller_lfs_abi::{Data, Error, IdcCommand, IdcInfo, Provider};

#[tokio::test]
async fn a_provider_written_in_c_works_through_the_host() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    if !Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: no C compiler (set CC)");
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("openteller-lfs-c-sp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("libminimal_sp.so");
    let out = Command::new(&cc)
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-shared",
            "-fPIC",
            "-pthread",
            "-I",
        ])
        .arg(manifest.join("include"))
        .arg(manifest.join("examples/minimal_sp.c"))
        .arg("-o")
        .arg(&lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minimal_sp.c does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let provider = Provider::load(&lib).unwrap();
    assert_eq!(provider.version().description, "Minimal C service provider");
    let (session, _events) = provider.open("IDC").unwrap();
    session.register(LFS_SERVICE_EVENTS).unwrap();
    // The example serves one session at a time.
    assert!(matches!(
        provider.open("IDC2"),
        Err(Error::Open {
            hresult: LFS_ERR_SERVICE_NOT_FOUND,
            ..
        })
    ));

    let wait = Duration::from_secs(5);
    let c = tokio::time::timeout(
        wait,
        session
            .get_info(IdcInfo::Capabilities, 0)
            .unwrap()
            .completion(),
    )
    .await
    .unwrap();
    let Data::Capabilities(caps) = c.data else {
        panic!("{:?}", c.data)
    };
    assert_eq!(
        (caps.vendor.as_str(), caps.model.as_str()),
        ("Example Corp", "Minimal C SP")
    );
    assert_eq!(caps.kind, LFS_IDC_TYPESWIPE);

    let c = tokio::time::timeout(
        wait,
        session.get_info(IdcInfo::Status, 0).unwrap().completion(),
    )
    .await
    .unwrap();
    let Data::Status(status) = c.data else {
        panic!("{:?}", c.data)
    };
    assert_eq!(status.media, LFS_IDC_MEDIANOTPRESENT);

    let reset = session
        .execute(
            &IdcCommand::Reset {
                action: Some(LFS_IDC_NOACTION),
            },
            0,
        )
        .unwrap();
    assert_eq!(
        tokio::time::timeout(wait, reset.completion())
            .await
            .unwrap()
            .hresult,
        LFS_SUCCESS
    );
    let eject = session.execute(&IdcCommand::EjectCard, 0).unwrap();
    let c = tokio::time::timeout(wait, eject.completion())
        .await
        .unwrap();
    assert_eq!(
        (c.hresult, c.code),
        (LFS_ERR_IDC_NOMEDIA, LFS_CMD_IDC_EJECT_CARD)
    );
    assert_eq!(session.open_requests(), 0);

    drop(session);
    drop(provider);
    let _ = std::fs::remove_dir_all(&dir);
}
