//! The container image, as far as it can be checked without a container engine: the
//! `Dockerfile` is multi-stage, builds with the README's command and strips the binary, runs as
//! an unprivileged user with a health check. The binary then runs as the image runs it: as a
//! user that is not root, with only the image's environment (its listen address moved to
//! 127.0.0.1:0 and its data directory into a fresh one), from an empty directory; it answers
//! `/readyz`, and the image's health check command passes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The JSON array of an exec-form instruction (`CMD ["a", "b"]`).
fn exec_form(line: &str) -> Vec<String> {
    let start = line.find('[').expect("exec form");
    serde_json::from_str(&line[start..]).expect("a JSON array")
}

struct Image {
    stages: usize,
    build: String,
    user: String,
    env: Vec<(String, String)>,
    healthcheck: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn image() -> Image {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    // Continuation lines joined, comments dropped.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut image = Image {
        stages: 0,
        build: String::new(),
        user: String::new(),
        env: Vec::new(),
        healthcheck: Vec::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
    };
    for line in joined.lines().map(str::trim) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "FROM" => image.stages += 1,
            "RUN" if rest.contains("cargo build") => image.build = rest.to_owned(),
            "USER" => image.user = rest.trim().to_owned(),
            "ENV" => {
                let (k, v) = rest.split_once('=').expect("ENV KEY=VALUE");
                image.env.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "HEALTHCHECK" => image.healthcheck = exec_form(rest),
            "ENTRYPOINT" => image.entrypoint = exec_form(rest),
            "CMD" => image.cmd = exec_form(rest),
            _ => {}
        }
    }
    image
}

#[test]
fn the_dockerfile_builds_a_stripped_binary_for_an_unprivileged_user() {
    let image = image();
    assert!(image.stages >= 2, "multi-stage");
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let command = "cargo build --profile production -p api --bin backbone";
    assert!(image.build.contains(command), "{}", image.build);
    assert!(
        readme.contains(command),
        "the README documents the build step"
    );
    assert!(image.build.contains("strip "), "{}", image.build);
    let uid = image.user.split(':').next().unwrap_or_default();
    assert!(
        !uid.is_empty() && uid != "0" && uid != "root",
        "{}",
        image.user
    );
    assert_eq!(image.entrypoint, ["backbone"]);
    assert_eq!(image.healthcheck[..2], ["backbone", "probe"]);
    assert!(image.healthcheck[2].ends_with("/readyz"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_readyz_as_the_image_runs_it() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let image = image();
    // An unprivileged user that can reach the binary and the data directory.
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = work.path().join("backbone");
    std::fs::copy(env!("CARGO_BIN_EXE_backbone"), &bin).expect("copy the binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = work.path().join("data");
    let nobody = 65534;
    let as_user = |args: &[String]| {
        let mut command = if running_as_root() {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={nobody}"),
                format!("--regid={nobody}"),
                "--clear-groups".to_owned(),
            ])
            .arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        command.args(args).env_clear().current_dir(work.path());
        for (k, v) in &image.env {
            match k.as_str() {
                "BACKBONE_LISTEN" => command.env(k, "127.0.0.1:0"),
                "BACKBONE_DATA" => command.env(k, &data),
                _ => command.env(k, v),
            };
        }
        command
    };

    let mut server = as_user(&image.cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the image's command");
    // Every log line must be JSON; the reader keeps draining stderr until the server stops.
    let stderr = BufReader::new(server.stderr.take().expect("stderr"));
    let (found, addresses) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let log: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("the image logs JSON lines, got {line:?}"));
            if log["message"] == "serving the HTTP API" {
                let _ = found.send(log["addr"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = addresses
        .recv_timeout(Duration::from_secs(60))
        .expect("the server's address in its logs");

    // The image's health check, as Docker would run it, passes once the server is ready.
    let mut check = image.healthcheck[1..].to_vec();
    check[1] = format!("http://{addr}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = as_user(&check).status().expect("run the health check");
        if status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    if running_as_root() {
        let owner = std::fs::metadata(data.join("events.sqlite"))
            .expect("data")
            .uid();
        assert_eq!(owner, nobody, "the data belongs to the unprivileged user");
    }
    let down = as_user(&["probe".to_owned(), "http://127.0.0.1:1/readyz".to_owned()])
        .status()
        .expect("probe");
    assert!(
        !down.success(),
        "the health check fails when nothing answers"
    );

    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(server.wait().expect("wait").success());
    reader.join().expect("every log line was JSON");
}

/// Whether this test runs as root (then it drops to an unprivileged user itself).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
