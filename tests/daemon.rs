//! `meit run` end to end with real components: simulated devices on real ptys, the serial
//! source, the bed pipelines, the committed default bundle on ONNX Runtime (one shared
//! inference worker), and JSON lines on standard output; `meit replay` of a 2-lead
//! MIT-BIH-style Holter record.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meit::ecg::{Lead, LeadSet, Recording};
use meit::synth::report::is_supported;
use meit::synth::{ConditionSet, RecordSpec, generate};
use meit::wfdb::{SignalFormat, WriteOptions, write_record};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bundle() -> PathBuf {
    repo().join("models/bundles/tiny")
}

/// `meit run` on `config`, stdout read line by line on a thread.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(config: &Path, cwd: &Path, extra: &[&str]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meit"));
        cmd.arg("run").args(["--output", "json"]).args(extra);
        if !config.as_os_str().is_empty() {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, lines }
    }

    /// Reports until `done` says so or `limit` passes.
    fn collect(&self, limit: Duration, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let end = Instant::now() + limit;
        let mut reports = Vec::new();
        while !done(&reports) {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => reports
                    .push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))),
                Err(_) => break,
            }
        }
        reports
    }

    /// Sends SIGTERM; returns how long the process took to exit, its success and stderr.
    fn terminate(mut self) -> (Duration, bool, String) {
        let sent = Instant::now();
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if sent.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = sent.elapsed();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        (took, status.is_some_and(|s| s.success()), err)
    }
}

fn reports_of<'a>(reports: &'a [Value], bed: &str) -> Vec<&'a Value> {
    reports.iter().filter(|r| r["bed"] == bed).collect()
}

fn codes(report: &Value) -> Vec<String> {
    report["outcome"]["codes"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn simulated_beds_get_reports_matching_their_condition_or_honest_no_reports_in_order_and_sigterm_stops_within_5_s()
 {
    let tag = std::process::id();
    let beds = [
        (
            "sinus",
            "condition = \"normal\"\nheart_rate_bpm = 72\nnoise = 0.05\n",
        ),
        (
            "tachy",
            "condition = \"tachy\"\nheart_rate_bpm = 120\nnoise = 0.05\n",
        ),
        ("af", "condition = \"af\"\nnoise = 0.05\n"),
        ("noisy", "condition = \"normal\"\nnoise = 1.0\n"),
        (
            "leadoff",
            "condition = \"normal\"\nnoise = 0.05\nelectrodes_off = [\"V2\"]\n",
        ),
        (
            "monitor",
            "condition = \"normal\"\nheart_rate_bpm = 72\nnoise = 0.05\nleads = [\"I\", \"II\", \"V1\"]\n",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("[model]\nbundle = \"{}\"\n", bundle().display());
    for (bed, settings) in beds {
        text.push_str(&format!(
            "\n[[source]]\nkind = \"simulated\"\nbed = \"{bed}-{tag}\"\nseed = 3\n{settings}"
        ));
    }
    let config = dir.path().join("beds.toml");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config, dir.path(), &[]);
    // Every bed's first two 10 s windows.
    let reports = daemon.collect(Duration::from_secs(50), |r| {
        beds.iter()
            .all(|(bed, _)| reports_of(r, &format!("{bed}-{tag}")).len() >= 2)
    });
    let (took, ok, stderr) = daemon.terminate();
    let all: Vec<String> = reports.iter().map(Value::to_string).collect();
    let all = all.join("\n");
    assert!(
        stderr.contains("model loaded"),
        "the committed bundle must load: {stderr}"
    );
    for (bed, _) in beds {
        let got = reports_of(&reports, &format!("{bed}-{tag}"));
        assert!(
            got.len() >= 2,
            "not two reports for {bed}:\n{all}\n{stderr}"
        );
        // Every window arrives, in order per bed, whichever road it took.
        let indices: Vec<u64> = got
            .iter()
            .map(|r| r["window_index"].as_u64().unwrap())
            .collect();
        assert_eq!(indices[..2], [0, 1], "{bed}: {indices:?}");
        for r in got {
            // Window end -> handed to the sink.
            let latency = r["timings"]["latency_ms"].as_f64().unwrap();
            assert!(latency < 2000.0, "{bed}: {latency} ms: {r}");
            let outcome = &r["outcome"];
            match bed {
                "sinus" | "tachy" | "af" => {
                    assert_eq!(outcome["kind"], "report", "{bed}: {r}");
                    let want = match bed {
                        "sinus" => "SR",
                        "tachy" => "STACH",
                        _ => "AFIB",
                    };
                    assert!(
                        codes(r).iter().any(|c| c == want),
                        "{bed}: expected {want} in {:?}: {r}",
                        codes(r)
                    );
                    assert!(
                        r["timings"]["inference"]["batch"].as_u64().unwrap() >= 1,
                        "{r}"
                    );
                }
                "monitor" => {
                    // A 3-lead monitor: the chest leads it lacks are masked and named, and the
                    // report says only what I, II (and the limb leads derived from them) and V1
                    // support.
                    assert_eq!(
                        r["masked_leads"],
                        serde_json::json!(["V2", "V3", "V4", "V5", "V6"]),
                        "{r}"
                    );
                    assert_eq!(outcome["kind"], "report", "{r}");
                    let have = |l: Lead| !["V2", "V3", "V4", "V5", "V6"].contains(&l.name());
                    assert!(codes(r).iter().all(|c| is_supported(c, have)), "{r}");
                    assert!(codes(r).iter().any(|c| c == "SR"), "{r}");
                }
                "noisy" => {
                    assert_eq!(outcome["kind"], "no_report", "{r}");
                    let reasons = outcome["reasons"].to_string();
                    assert!(reasons.contains("noisy"), "{r}");
                    assert!(
                        r["timings"]["inference"].is_null(),
                        "never sent to the model"
                    );
                }
                _ => {
                    assert_eq!(outcome["kind"], "no_report", "{r}");
                    let reasons = outcome["reasons"].to_string();
                    assert!(reasons.contains("V2 lead off"), "{r}");
                }
            }
        }
    }
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM -> exit took {took:?}"
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape codes in a piped stderr: {stderr}"
    );
}

#[test]
fn meit_run_without_a_config_runs_the_embedded_default_from_any_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(Path::new(""), elsewhere.path(), &["--max-windows", "1"]);
    let reports = daemon.collect(Duration::from_secs(40), |r| !r.is_empty());
    let (_, ok, stderr) = daemon.terminate();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("embedded default configuration") && stderr.contains("model loaded"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot read configuration"), "{stderr}");
    assert_eq!(reports.len(), 1, "{stderr}");
    assert_eq!(reports[0]["bed"], "bed-1");
    assert_eq!(reports[0]["outcome"]["kind"], "report", "{}", reports[0]);
}

/// A 2-lead Holter record as MIT-BIH stores it: MLII and V5 at 360 Hz, format 212.
fn write_holter(dir: &Path, seconds: f64) -> LeadSet {
    let spec = RecordSpec {
        sample_rate_hz: 360.0,
        seconds,
        ..RecordSpec::ten_seconds(ConditionSet::parse_list("normal").unwrap())
    };
    let twelve = generate(&spec, 9).unwrap().recording;
    let rows: Vec<usize> = [Lead::II, Lead::V5]
        .iter()
        .map(|l| twelve.leads.position(*l).unwrap())
        .collect();
    let two = Recording {
        sample_rate_hz: 360.0,
        leads: LeadSet(vec![Lead::II, Lead::V5]),
        samples_uv: twelve.samples_uv.select(ndarray::Axis(0), &rows),
    };
    let options = WriteOptions {
        format: SignalFormat::Format212,
        adc_gain_per_mv: 200.0,
    };
    let mut header = write_record(dir, "100", &two, options, &[]).unwrap();
    header.signals[0].description = "MLII".into();
    header.signals[1].description = "V5".into();
    std::fs::write(dir.join("100.hea"), header.to_text()).unwrap();
    two.leads
}

#[test]
fn a_two_lead_holter_replay_is_reported_on_what_two_leads_support() {
    let dir = tempfile::tempdir().unwrap();
    let leads = write_holter(dir.path(), 30.0);
    let config = dir.path().join("meit.toml");
    std::fs::write(
        &config,
        format!("[model]\nbundle = \"{}\"\n", bundle().display()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meit"))
        .args(["replay", "--fast", "--output", "json", "--config"])
        .arg(&config)
        .arg(dir.path().join("100.hea"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("2 leads at 360 Hz"), "{stderr}");
    let reports: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(reports.len(), 3, "{stdout}");
    let available = |l: Lead| leads.0.contains(&l);
    let mut reported = 0;
    for r in &reports {
        // Only II and V5: nothing else can be derived, and the masked leads are named.
        let masked: Vec<&str> = r["masked_leads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            masked,
            [
                "I", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V6"
            ],
            "{r}"
        );
        let reasons = r["outcome"]["reasons"].to_string();
        assert!(
            !reasons.contains("required)") || !reasons.contains("V1"),
            "{r}"
        );
        if r["outcome"]["kind"] == "report" {
            reported += 1;
            let codes = codes(r);
            assert!(
                codes.iter().all(|c| is_supported(c, available)),
                "claims beyond two leads: {codes:?}: {r}"
            );
            assert!(
                r["outcome"]["contradictions"]
                    .as_array()
                    .unwrap()
                    .is_empty(),
                "{r}"
            );
        }
    }
    assert!(reported >= 2, "{stdout}");
}

#[test]
fn when_inference_falls_behind_the_oldest_windows_are_dropped_published_and_counted() {
    let tag = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    // Inference slowed to 1.5 s a window, one window at a time, room for one waiting: of four
    // beds whose windows end together, the first is generated and the oldest waiting go.
    let port = free_port();
    let mut text = format!(
        "[model]\nbundle = \"{}\"\n\n[pipeline]\nmax_batch = 1\nmax_wait_ms = 0\nqueue_windows = 1\ninference_delay_ms = 1500\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        bundle().display()
    );
    let beds: Vec<String> = (0..4).map(|i| format!("slow{i}-{tag}")).collect();
    for bed in &beds {
        text.push_str(&format!(
            "\n[[source]]\nkind = \"simulated\"\nbed = \"{bed}\"\nheart_rate_bpm = 70\nnoise = 0.05\n"
        ));
    }
    let config = dir.path().join("slow.toml");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config, dir.path(), &[]);
    let reports = daemon.collect(Duration::from_secs(45), |r| {
        beds.iter().all(|bed| !reports_of(r, bed).is_empty())
    });
    // The counters follow the sink by a moment.
    std::thread::sleep(Duration::from_millis(300));
    let exposition = scrape(port);
    let (took, ok, stderr) = daemon.terminate();
    assert!(ok && took < Duration::from_secs(5), "{took:?} {stderr}");
    let first: Vec<&Value> = beds
        .iter()
        .map(|bed| {
            *reports_of(&reports, bed)
                .first()
                .unwrap_or_else(|| panic!("nothing for {bed}: {reports:?}\n{stderr}"))
        })
        .collect();
    let dropped: Vec<&&Value> = first
        .iter()
        .filter(|r| {
            r["outcome"]["kind"] == "no_report"
                && r["outcome"]["reasons"]
                    .to_string()
                    .contains("inference fell behind")
        })
        .collect();
    let generated = first
        .iter()
        .filter(|r| r["outcome"]["kind"] == "report")
        .count();
    assert!(!dropped.is_empty() && generated >= 1, "{first:?}\n{stderr}");
    // A dropped window still carries what the signal showed.
    for r in &dropped {
        assert!(
            r["measurements"]["heart_rate_bpm"].as_f64().is_some(),
            "{r}"
        );
    }
    let counted = stderr
        .lines()
        .find(|l| l.contains("stopped"))
        .and_then(|l| l.split("dropped=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(counted >= dropped.len() as u64, "{counted}: {stderr}");
    // The metrics endpoint saw the same: drops by cause, reports, frames, latency.
    let value = |prefix: &str| -> f64 {
        exposition
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        value("meit_inference_dropped_total") >= dropped.len() as f64,
        "{exposition}"
    );
    assert!(
        value("meit_no_report_total{") >= dropped.len() as f64,
        "{exposition}"
    );
    assert!(value("meit_windows_total{") >= 4.0, "{exposition}");
    assert!(value("meit_frames_total{") >= 4.0 * 5000.0, "{exposition}");
    assert!(
        value("meit_end_to_end_seconds_count") >= 4.0,
        "{exposition}"
    );
    assert_eq!(value("meit_model_ready{"), 1.0, "{exposition}");
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP GET of /metrics; the body.
fn scrape(port: u16) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

#[test]
fn every_example_config_passes_check_config() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_meit"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(": ok ("),
            "{}: {stdout}{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for required in ["meit.toml", "bedside.toml", "ward-gateway.toml"] {
        assert!(checked.iter().any(|c| c == required), "{checked:?}");
    }
}

#[test]
fn a_required_model_that_cannot_be_used_stops_the_start_naming_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("required.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nbundle = \"{}\"\nrequired = true\n\n[[source]]\nkind = \"simulated\"\nbed = \"req-{}\"\n",
            dir.path().join("gone").display(),
            std::process::id()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meit"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no model bundle at")
            && stderr.contains("gone")
            && stderr.contains("required = true"),
        "{stderr}"
    );
}
