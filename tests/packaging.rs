//! The packaging in packaging/: the systemd units pass `systemd-analyze
//! verify`, every ARGS line of /etc/default/raspivid_mjpeg_server is one the
//! server accepts, and every file the .deb takes exists.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const INSTALLED: &str = "/usr/bin/raspivid_mjpeg_server";

fn packaging(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
#[ignore = "needs systemd-analyze (Debian's systemd): run with --include-ignored, as .ci/run does"]
fn the_units_pass_systemd_analyze_verify() {
    common::require("systemd-analyze");
    // verify checks that ExecStart's program exists: the copies run the
    // binary under test instead of the installed one.
    let dir = std::env::temp_dir().join(format!("rms-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut units = Vec::new();
    for name in ["raspivid_mjpeg_server.service", "raspivid_mjpeg_server.socket"] {
        let text = read(&packaging(name));
        let copy = dir.join(name);
        std::fs::write(&copy, text.replace(INSTALLED, env!("CARGO_BIN_EXE_raspivid_mjpeg_server")))
            .unwrap();
        units.push(copy);
    }
    assert!(
        read(&units[0]).contains(env!("CARGO_BIN_EXE_raspivid_mjpeg_server")),
        "no {INSTALLED} in the service"
    );
    // The man page is checked where it is installed (the .deb); here it is not.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_service_reads_its_arguments_from_etc_default() {
    let service = read(&packaging("raspivid_mjpeg_server.service"));
    for line in [
        "Type=notify",
        "EnvironmentFile=/etc/default/raspivid_mjpeg_server",
        &format!("ExecStart={INSTALLED} $ARGS"),
        "DynamicUser=yes",
        "SupplementaryGroups=video",
        "Restart=always",
    ] {
        assert!(service.lines().any(|l| l == line), "the service lacks {line}");
    }
    // A device allow-list (or ProtectClock=, which older systemd turns
    // into one) would cut the camera off.
    for key in ["PrivateDevices=", "DeviceAllow=", "DevicePolicy=", "ProtectClock="] {
        assert!(!service.lines().any(|l| l.starts_with(key)), "the service sets {key}");
    }
}

/// Every `ARGS=` line of the default file, commented out or not, split
/// into words as systemd splits `$ARGS` (quotes honoured; sh does the
/// same for these), is accepted by the server's flag parser.
#[test]
fn every_args_line_in_etc_default_parses() {
    let default = read(&packaging("default"));
    let lines: Vec<&str> =
        default.lines().filter(|l| l.starts_with("ARGS=") || l.starts_with("#ARGS=")).collect();
    assert_eq!(
        default.lines().filter(|l| l.starts_with("ARGS=")).count(),
        1,
        "one active ARGS line"
    );
    assert!(lines.len() >= 5, "examples for rpicam-vid, libcamera-vid, raspivid and ffmpeg");
    for line in lines {
        let assignment = line.trim_start_matches('#');
        // `--help` at the end: the parser reads every flag before it, and
        // exits 0 only if they are all known and well-formed.
        let out = Command::new("sh")
            .args(["-c", &format!("{assignment}\neval \"set -- $ARGS\"\nprintf '%s\\n' \"$1\"\nexec \"$0\" \"$@\" --help")])
            .arg(env!("CARGO_BIN_EXE_raspivid_mjpeg_server"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        let first =
            String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned();
        assert!(first == "--exec" || first == "--pattern", "{line}: starts with {first:?}");
    }
}

#[test]
fn every_file_the_deb_takes_exists() {
    let manifest = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    let section =
        manifest.split("[package.metadata.deb]").nth(1).expect("a [package.metadata.deb] section");
    let section = section.split("\n[").next().unwrap();
    let mut checked = 0;
    for line in section.lines() {
        let line = line.trim();
        // Asset sources, and the files named by changelog and license-file;
        // target/ is what tools/release.sh builds.
        let source = if let Some(asset) = line.strip_prefix("[\"") {
            asset.split('"').next()
        } else if line.starts_with("changelog =") || line.starts_with("license-file =") {
            line.split('"').nth(1)
        } else {
            None
        };
        if let Some(source) = source.filter(|s| !s.starts_with("target/")) {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(source).is_file(),
                "{source} is missing"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} files found in [package.metadata.deb]");
    for unit in ["raspivid_mjpeg_server.service", "raspivid_mjpeg_server.socket"] {
        assert!(packaging(unit).is_file(), "packaging/{unit} is missing");
    }
}
