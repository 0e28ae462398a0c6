//! `scripts/ensure-redis.sh` without building anything: which Debian mirror
//! it takes from apt's sources (fixture files via `FS_APT_ETC`), and which
//! `--version` lines it accepts (fake binaries via `FS_REDIS_SERVER`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ensure-redis.sh");

/// `ensure-redis.sh ARGS` with the environment the test gives, nothing else
/// of the machine's that could change the answer.
fn ensure_redis(env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(SCRIPT)
        .args(args)
        .env_remove("FS_DEBIAN_MIRROR")
        .env_remove("FS_REDIS_SERVER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running ensure-redis.sh")
}

/// An apt configuration dir holding `files` (path under it, content).
fn apt_etc(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("sources.list.d")).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("writing a fixture");
    }
    dir
}

fn mirror_of(files: &[(&str, &str)]) -> String {
    let dir = apt_etc(files);
    let out = ensure_redis(&[("FS_APT_ETC", dir.path())], &["--print-mirror"]);
    assert!(
        out.status.success(),
        "{files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn ensure_redis_takes_the_mirror_from_the_machines_apt_sources() {
    // One-line format: the security archive and a non-Debian repository
    // come first, options in brackets, a trailing slash.
    let list = "# the company mirror\n\
                deb http://mirror.corp.example/debian-security bookworm-security main\n\
                deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n\
                deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.corp.example/debian/ bookworm main contrib\n\
                deb http://other.example/debian bookworm main\n";
    assert_eq!(
        mirror_of(&[("sources.list", list)]),
        "http://mirror.corp.example/debian"
    );

    // deb822 as Debian 12 images ship it, with a disabled stanza, a
    // non-Debian suite and the security stanza around the main one.
    let sources = "Types: deb\n\
                   URIs: http://disabled.example/debian\n\
                   Suites: bookworm\n\
                   Components: main\n\
                   Enabled: no\n\
                   \n\
                   Types: deb\n\
                   URIs: https://deb.nodesource.com/node_20.x\n\
                   Suites: nodistro\n\
                   Components: main\n\
                   \n\
                   Types: deb\n\
                   # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                   URIs: http://apt-cache.corp.example:3142/debian\n\
                   Suites: bookworm bookworm-updates\n\
                   Components: main\n\
                   Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
                   \n\
                   Types: deb\n\
                   URIs: http://deb.debian.org/debian-security\n\
                   Suites: bookworm-security\n\
                   Components: main\n";
    assert_eq!(
        mirror_of(&[("sources.list.d/debian.sources", sources)]),
        "http://apt-cache.corp.example:3142/debian"
    );

    // sources.list comes before sources.list.d; an Ubuntu archive or a
    // suite without `main` is not a Debian main archive.
    let list = "deb http://archive.ubuntu.com/ubuntu jammy main\n\
                deb http://nomain.example/debian bookworm contrib\n";
    assert_eq!(
        mirror_of(&[
            ("sources.list", list),
            (
                "sources.list.d/b.list",
                "deb http://second.example/debian trixie main\n"
            ),
            (
                "sources.list.d/a.list",
                "deb-src http://first.example/debian sid main\n"
            ),
        ]),
        "http://first.example/debian"
    );
}

#[test]
fn ensure_redis_without_a_debian_mirror_says_what_to_configure() {
    let dir = apt_etc(&[(
        "sources.list",
        "deb http://archive.ubuntu.com/ubuntu jammy main\n",
    )]);
    let out = ensure_redis(&[("FS_APT_ETC", dir.path())], &["--print-mirror"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no Debian archive mirror"), "{stderr}");
    assert!(stderr.contains("FS_DEBIAN_MIRROR="), "{stderr}");
    assert!(stderr.contains("Acquire::http::Proxy"), "{stderr}");
    assert!(out.stdout.is_empty());

    // The override needs no apt source at all.
    let out = Command::new("bash")
        .arg(SCRIPT)
        .arg("--print-mirror")
        .env("FS_APT_ETC", dir.path())
        .env("FS_DEBIAN_MIRROR", "http://override.example/debian/")
        .output()
        .expect("running ensure-redis.sh");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "http://override.example/debian"
    );
}

/// A fake server binary whose `--version` prints `line`.
fn fake_server(dir: &Path, name: &str, line: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\necho '{line}'\n")).expect("writing");
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).expect("chmod");
    path
}

#[test]
fn ensure_redis_refuses_valkey_8_and_redis_7_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "Valkey server v=8.1.1 sha=00000000:0 malloc=jemalloc bits=64",
            false,
        ),
        (
            "Valkey server v=9.0.0 sha=00000000:0 malloc=jemalloc bits=64",
            true,
        ),
        (
            "Redis server v=7.2.4 sha=00000000:0 malloc=jemalloc bits=64",
            false,
        ),
        (
            "Redis server v=7.4.0 sha=00000000:0 malloc=jemalloc bits=64",
            true,
        ),
    ];
    for (i, (line, accepted)) in cases.into_iter().enumerate() {
        let bin = fake_server(dir.path(), &format!("server{i}"), line);
        let out = ensure_redis(&[("FS_REDIS_SERVER", &bin)], &[]);
        assert_eq!(
            out.status.success(),
            accepted,
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if accepted {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                bin.to_str().expect("path")
            );
        }
    }
}
