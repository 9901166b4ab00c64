//! The `adpa` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADPA: &str = env!("CARGO_BIN_EXE_adpa");

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("adpa-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_valid_config() {
    let path = write_config(
        "valid.toml",
        "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"llama3\"]\n\
         [routes.chat]\nprimary = \"local\"\n",
    );
    let output = Command::new(ADPA)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("config is valid"), "{stdout}");
    assert!(stdout.contains("route chat: local/llama3"), "{stdout}");
}

#[test]
fn check_names_bad_keys_and_values() {
    let cases = [
        ("[routes.chat]\nprimary = \"nowhere\"\n", "routes.chat.primary: unknown provider `nowhere`"),
        ("[defaults.retry]\njitter = 3.0\n[providers.a]\nkind = \"openai\"\nmodels = [\"m\"]\n", "defaults.retry.jitter"),
        ("[server]\nlisten = \"127.0.0.1:8080\"\nport = 9\n", "unknown field `port`"),
        (
            "[providers.a]\nkind = \"openai\"\napi_key = \"${ADPA_TEST_SURELY_UNSET_VARIABLE}\"\nmodels = [\"m\"]\n",
            "providers.a.api_key: environment variable ADPA_TEST_SURELY_UNSET_VARIABLE is not set",
        ),
    ];
    for (index, (text, expected)) in cases.iter().enumerate() {
        let path = write_config(&format!("bad-{index}.toml"), text);
        let output = Command::new(ADPA)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in: {stderr}"
        );
    }
}

#[test]
fn check_reports_missing_file() {
    let output = Command::new(ADPA)
        .args(["check", "--config", "/nonexistent/adpa.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
}

/// Kills the child process when the test ends, whatever happens.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads stdout lines until one contains `marker`; returns all lines read. The rest of
/// the output is drained in the background so the child never writes to a closed pipe.
fn read_until(child: &mut Child, marker: &str) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in reader.by_ref() {
        let line = line.unwrap();
        let done = line.contains(marker);
        lines.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    std::thread::spawn(move || reader.for_each(drop));
    lines
}

#[test]
fn serve_without_config_fails_over_between_simulated_providers() {
    let child = Command::new(ADPA)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("GROQ_API_KEY")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let lines = read_until(&mut running.0, "curl");

    let banner = lines
        .iter()
        .find(|l| l.contains("listening on"))
        .expect("a start banner");
    let addr = banner.rsplit("http://").next().unwrap().trim().to_owned();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("route chat") && l.contains("sim-flaky")),
        "{lines:?}"
    );

    // The first request fails on the flaky provider and is served by the healthy one.
    let output = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            &format!("http://{addr}/v1/chat/completions"),
        ])
        .args(["-H", "content-type: application/json"])
        .args([
            "-d",
            r#"{"model":"chat","messages":[{"role":"user","content":"Hello"}]}"#,
        ])
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&output.stdout);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-adpa-attempts: 2"), "{reply}");
    assert!(reply.contains("x-adpa-provider: sim-healthy"), "{reply}");
    assert!(reply.contains("Hello from sim-healthy"), "{reply}");
}

#[test]
fn serve_stops_on_sigterm() {
    let path = write_config(
        "serve.toml",
        "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"m\"]\n",
    );
    let child = Command::new(ADPA)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    read_until(&mut running.0, "curl");

    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "adpa serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sim_serves_scripted_faults() {
    let faults = write_config(
        "faults.toml",
        "[[faults]]\nkind = \"status\"\nstatus = 503\nuntil_request = 1\n",
    );
    let child = Command::new(ADPA)
        .args(["sim", "--listen", "127.0.0.1:0", "--faults"])
        .arg(&faults)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let lines = read_until(&mut running.0, "stats:");
    let banner = lines
        .iter()
        .find(|l| l.contains("base_url"))
        .expect("a start banner");
    let base_url = banner.split('"').nth(1).expect("a quoted base_url");

    let url = format!("{base_url}/chat/completions");
    let body = r#"{"model":"m","messages":[]}"#;
    let status = |url: &str| {
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                url,
                "-d",
                body,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(status(&url), "503");
    assert_eq!(status(&url), "200");
}

#[test]
fn check_explains_route_order() {
    let path = write_config(
        "explain.toml",
        "[providers.a]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"big\", \"small\"]\n\
         [providers.b]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"big\"]\n\
         region_strategy = \"sequential\"\n\
         [routes.chat]\nprimary = \"a\"\nsecondaries = [\"b\"]\nhedge_delay = \"p95\"\n\
         models = [[\"small\", 0.5], { name = \"big\", weight = 1.0, context_window = 8192, tools = false }]\n\
         [routes.gap]\nprimary = \"a\"\n\
         models = [[\"big\", 1.0], { name = \"small\", weight = 0.5, tools = false }]\n",
    );
    let output = Command::new(ADPA)
        .args(["check", "--config"])
        .arg(&path)
        .args(["--explain", "chat"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let order: Vec<&str> = stdout
        .lines()
        .filter(|line| line.trim_start().starts_with(char::is_numeric))
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(order, ["a/big", "b/big", "a/small"]);
    assert!(stdout.contains("window 8192  no-tools"), "{stdout}");
    assert!(
        stdout.contains("hedging: an attempt without an answer after p95"),
        "{stdout}"
    );

    let unknown = Command::new(ADPA)
        .args(["check", "--config"])
        .arg(&path)
        .args(["--explain", "nope"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no route named `nope`"));

    let plain = Command::new(ADPA)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert!(
        stdout.contains("warning: routes.chat.models: only `big` supports")
            || stdout.contains("warning"),
        "{stdout}"
    );
}

#[test]
fn key_new_prints_secret_and_hash() {
    let output = Command::new(ADPA)
        .args(["key", "new", "team"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let secret = stdout
        .split_whitespace()
        .find(|word| word.starts_with("sk-adpa-"))
        .expect("a secret");
    assert!(stdout.contains("name = \"team\""), "{stdout}");
    let expected = adpa_gateway::keys::hash_of(secret);
    assert!(
        stdout.contains(&format!("hash = \"{expected}\"")),
        "{stdout}"
    );
}
