//! `meit doctor`: what this machine offers the daemon — ONNX Runtime and its execution
//! providers, serial ports, model bundles and the broker — each as one line a biomedical
//! engineer can act on.

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::infer::runtime::{OnnxRuntime, RuntimeError};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Usable, but worth a look (no ports, broker down).
    Warn,
    /// The daemon cannot run until this is fixed.
    Fail,
}

/// One line of the doctor's report.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What was checked.
    pub topic: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found, or what to do.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "[{tag}] {:<12} {}", self.topic, self.detail)
    }
}

/// Runs every check against `config` (whose path, if any, is `config_path`).
pub fn examine(config: &Config, config_path: Option<&Path>) -> Vec<Finding> {
    let mut out = vec![Finding {
        topic: "config",
        status: Status::Ok,
        detail: match config_path {
            Some(p) => format!("{} (valid)", p.display()),
            None => "none given; built-in defaults".into(),
        },
    }];
    out.extend(onnx_runtime(config));
    out.push(serial_ports());
    out.push(model_bundle(&config.model.bundle));
    out.push(broker(&config.mqtt.host, config.mqtt.port));
    out
}

fn onnx_runtime(config: &Config) -> Vec<Finding> {
    match OnnxRuntime::load(config.runtime.onnxruntime.as_deref()) {
        Ok(rt) => {
            let providers: Vec<String> = rt
                .providers()
                .into_iter()
                .map(|p| {
                    format!(
                        "{}{}",
                        p.name,
                        if p.available {
                            ""
                        } else {
                            " (not in this build)"
                        }
                    )
                })
                .collect();
            vec![
                Finding {
                    topic: "onnxruntime",
                    status: Status::Ok,
                    detail: format!(
                        "{} at {} (from {})",
                        rt.version,
                        rt.library.path.display(),
                        rt.library.source
                    ),
                },
                Finding {
                    topic: "providers",
                    status: Status::Ok,
                    detail: providers.join(", "),
                },
            ]
        }
        Err(e) => vec![runtime_failure(&e)],
    }
}

fn runtime_failure(e: &RuntimeError) -> Finding {
    Finding {
        topic: "onnxruntime",
        status: Status::Fail,
        detail: e.to_string(),
    }
}

fn serial_ports() -> Finding {
    match serialport::available_ports() {
        Ok(ports) if ports.is_empty() => Finding {
            topic: "serial",
            status: Status::Warn,
            detail: "no serial ports found".into(),
        },
        Ok(ports) => Finding {
            topic: "serial",
            status: Status::Ok,
            detail: ports
                .iter()
                .map(|p| match &p.port_type {
                    serialport::SerialPortType::UsbPort(u) => {
                        format!("{} (USB {:04x}:{:04x})", p.port_name, u.vid, u.pid)
                    }
                    _ => p.port_name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        },
        Err(e) => Finding {
            topic: "serial",
            status: Status::Warn,
            detail: format!("cannot list ports: {e}"),
        },
    }
}

fn model_bundle(bundle: &Path) -> Finding {
    let manifest = bundle.join(crate::infer::bundle::MANIFEST_FILE);
    if manifest.is_file() {
        // Manifest, checksums and preprocessing; the graphs are opened by `meit run`.
        match crate::infer::bundle::Bundle::open_unchecked_graphs(bundle) {
            Ok(b) => Finding {
                topic: "model",
                status: Status::Ok,
                detail: format!(
                    "bundle {}: {} {} ({:?} decoder, {} layers, vocabulary {}), checksums verified",
                    bundle.display(),
                    b.manifest.model.id,
                    b.manifest.model.version,
                    b.manifest.decoder_graph.precision,
                    b.manifest.decoder.num_layers,
                    b.manifest.decoder.vocab_size
                ),
            },
            Err(e) => Finding {
                topic: "model",
                status: Status::Fail,
                detail: e.to_string(),
            },
        }
    } else {
        Finding {
            topic: "model",
            status: Status::Warn,
            detail: format!(
                "no model bundle at {} (no manifest.json); reports cannot be generated yet",
                bundle.display()
            ),
        }
    }
}

fn broker(host: &str, port: u16) -> Finding {
    let target = format!("{host}:{port}");
    let addrs = match target.to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => {
            return Finding {
                topic: "broker",
                status: Status::Warn,
                detail: format!("{target}: cannot resolve: {e}"),
            };
        }
    };
    for addr in &addrs {
        if TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_ok() {
            return Finding {
                topic: "broker",
                status: Status::Ok,
                detail: format!("{target} accepts connections"),
            };
        }
    }
    Finding {
        topic: "broker",
        status: Status::Warn,
        detail: format!("{target} unreachable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_check_tells_open_from_closed_ports() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(broker("127.0.0.1", port).status, Status::Ok);
        drop(listener);
        assert_eq!(broker("127.0.0.1", port).status, Status::Warn);
    }

    #[test]
    fn the_committed_bundle_verifies_and_a_damaged_one_fails() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/bundles/tiny");
        let f = model_bundle(&committed);
        assert_eq!(f.status, Status::Ok, "{}", f.detail);
        assert!(
            f.detail.contains("meit-tiny") && f.detail.contains("Int4"),
            "{}",
            f.detail
        );
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&committed).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        std::fs::write(dir.path().join("encoder.onnx"), b"not a graph").unwrap();
        let f = model_bundle(dir.path());
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.detail.contains("encoder.onnx") && f.detail.contains("sha256"),
            "{}",
            f.detail
        );
    }

    #[test]
    fn missing_bundle_is_a_warning_naming_the_path() {
        let f = model_bundle(Path::new("/no/such/bundle"));
        assert_eq!(f.status, Status::Warn);
        assert!(f.detail.contains("/no/such/bundle"));
    }
}
