//! `meit simulate`: act as an ECG acquisition device speaking the firmware-bridge protocol,
//! on a pty pair of its own (published as a symlink) or on a given serial port.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use meit::acquire::signal::{DEFAULT_NOISE, SignalError, SynthSettings, SynthSignal};
use meit::acquire::simulator::{
    Device, DeviceSettings, Faults, Recurring, run_on_port, run_on_pty,
};
use meit::ecg::{Lead, LeadSet};
use meit::synth::ConditionSet;

/// Options of `meit simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Symlink to publish the pty's device path at (re-pointed after each simulated unplug).
    #[arg(long, default_value = "/tmp/meit-sim")]
    pub link: PathBuf,
    /// Use this serial port (e.g. one end of a socat pair) instead of creating a pty.
    #[arg(long, conflicts_with = "link")]
    pub port: Option<PathBuf>,
    /// Conditions to synthesize, joined by `+` or `,`: e.g. `normal`, `af`, `af+pvc`,
    /// `lbbb+long-qt` (`meit synth --list` lists the names).
    #[arg(long, default_value = "normal")]
    pub condition: String,
    /// Mean heart rate in bpm (20-250); by default one that fits the conditions is drawn.
    #[arg(long, visible_alias = "heart-rate")]
    pub hr: Option<f32>,
    /// Severity (0-1) of the artefacts: baseline wander, mains, muscle noise, electrode motion.
    #[arg(long, default_value_t = DEFAULT_NOISE)]
    pub noise: f32,
    /// Sample rate in Hz (100-1000).
    #[arg(long, default_value_t = 500)]
    pub sample_rate: u32,
    /// Leads the device exposes, in channel order: `12` for the standard set, or a comma list
    /// such as `I,II,V1`.
    #[arg(long, default_value = "12")]
    pub leads: String,
    /// Time points per sample block (1..=32).
    #[arg(long, default_value_t = 5)]
    pub frames_per_block: usize,
    /// Probability per transmitted byte of flipping a bit.
    #[arg(long, default_value_t = 0.0)]
    pub bit_flip_rate: f64,
    /// Probability per transmitted byte of dropping it.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Stop sending every this many seconds (see --stall-for).
    #[arg(long)]
    pub stall_every: Option<f64>,
    /// Length of each stall in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub stall_for: f64,
    /// Unplug (close the pty) every this many seconds (see --unplug-for; pty mode only: a
    /// given --port cannot be unplugged by this process, and is refused with it).
    #[arg(long, conflicts_with = "port")]
    pub unplug_every: Option<f64>,
    /// How long each unplug lasts in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub unplug_for: f64,
    /// Seed for the signal and fault injection.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Device serial number in the hello.
    #[arg(long, default_value = "MEIT-SIM-0001")]
    pub serial: String,
    /// Baud rate when --port is given.
    #[arg(long, default_value_t = 921_600)]
    pub baud: u32,
}

fn parse_leads(spec: &str) -> anyhow::Result<LeadSet> {
    if spec.trim() == "12" {
        return Ok(LeadSet::standard_12());
    }
    let leads = spec
        .split(',')
        .map(|s| s.parse::<Lead>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--leads `{spec}`"))?;
    Ok(LeadSet(leads))
}

fn recurring(every: Option<f64>, lasting: f64, flag: &str) -> anyhow::Result<Option<Recurring>> {
    every
        .map(|e| {
            if !(e > 0.0 && lasting > 0.0 && lasting < e) {
                bail!("--{flag}-every must be positive and longer than --{flag}-for");
            }
            let seconds = |value: f64, which: &str| {
                Duration::try_from_secs_f64(value)
                    .with_context(|| format!("--{flag}-{which} {value}: too long a time"))
            };
            Ok(Recurring {
                every: seconds(e, "every")?,
                lasting: seconds(lasting, "for")?,
            })
        })
        .transpose()
}

/// Runs the simulator until Ctrl-C or SIGTERM.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let conditions = ConditionSet::parse_list(&args.condition)
        .with_context(|| format!("--condition `{}`", args.condition))?;
    for (flag, p) in [
        ("bit-flip-rate", args.bit_flip_rate),
        ("drop-rate", args.drop_rate),
    ] {
        if !(0.0..=1.0).contains(&p) {
            bail!("--{flag} {p}: a probability between 0 and 1");
        }
    }
    let settings = SynthSettings {
        sample_rate_hz: f64::from(args.sample_rate),
        conditions,
        heart_rate_bpm: args.hr,
        noise: args.noise,
        leads: parse_leads(&args.leads)?,
        seed: args.seed,
    };
    let generator = SynthSignal::new(&settings).map_err(|e| {
        let flag = match e {
            SignalError::SampleRate(_) => "--sample-rate",
            SignalError::HeartRate(_) => "--hr",
            SignalError::Noise(_) => "--noise",
            SignalError::Leads(_) => "--leads",
            SignalError::Synth(_) => "simulated signal",
            // `meit simulate` streams one signal, never a scenario.
            SignalError::Steps(_) | SignalError::StepsDiffer | SignalError::StepSeconds(_) => {
                "scenario"
            }
        };
        anyhow::Error::from(e).context(flag)
    })?;
    let faults = Faults {
        bit_flip_per_byte: args.bit_flip_rate,
        drop_per_byte: args.drop_rate,
        stall: recurring(args.stall_every, args.stall_for, "stall")?,
        disconnect: recurring(args.unplug_every, args.unplug_for, "unplug")?,
    };
    let mut device = Device::new(
        Box::new(generator),
        DeviceSettings {
            serial: args.serial.clone(),
            frames_per_block: args.frames_per_block,
            faults,
            seed: args.seed,
            ..DeviceSettings::default()
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Arc::clone(&stop);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            });
        }
        stopper.store(true, Ordering::Relaxed);
    });

    match &args.port {
        Some(path) => {
            let mut port = serialport::new(path.to_string_lossy(), args.baud)
                .open()
                .with_context(|| format!("cannot open {}", path.display()))?;
            writeln!(
                std::io::stdout(),
                "simulating on {} (Ctrl-C to stop)",
                path.display()
            )?;
            run_on_port(&mut device, port.as_mut(), &stop, std::time::Instant::now())?;
        }
        None => {
            let link = args.link.clone();
            run_on_pty(&mut device, &link, &stop, |pty| {
                // A status line: the device runs on whether or not anyone reads it.
                let _ = writeln!(
                    std::io::stdout(),
                    "device ready at {} -> {} (Ctrl-C to stop)",
                    link.display(),
                    pty.display()
                );
            })?;
        }
    }
    let s = device.stats();
    writeln!(
        std::io::stdout(),
        "sent {} blocks ({} corrupted, {} lost in stalls)",
        s.blocks,
        s.blocks_corrupted,
        s.blocks_stalled
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    /// A given serial port is not this process's to unplug: `--unplug-every` with `--port` is
    /// refused when the command line is read (it used to end the simulator at the first unplug).
    #[test]
    fn unplugging_a_given_port_is_refused_at_parse() {
        use clap::Parser;
        let err = Cli::try_parse_from(["simulate", "--port", "/dev/ttyS9", "--unplug-every", "5"])
            .err()
            .expect("must be refused");
        let text = err.to_string();
        assert!(
            text.contains("--unplug-every") && text.contains("--port"),
            "{text}"
        );
        assert!(Cli::try_parse_from(["simulate", "--unplug-every", "5"]).is_ok());
        assert!(Cli::try_parse_from(["simulate", "--port", "/dev/ttyS9"]).is_ok());
    }

    #[test]
    fn recurring_faults_with_absurd_periods_are_errors_naming_the_flag() {
        let every = recurring(Some(1e300), 1.0, "stall").unwrap_err();
        assert!(format!("{every:#}").contains("--stall-every"), "{every:#}");
        let both = recurring(Some(f64::MAX), 1e300, "unplug").unwrap_err();
        assert!(format!("{both:#}").contains("--unplug-every"), "{both:#}");
        for bad in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            assert!(recurring(Some(bad), 1.0, "stall").is_err(), "{bad}");
        }
        let ok = recurring(Some(10.0), 2.0, "stall").unwrap().unwrap();
        assert_eq!(
            (ok.every, ok.lasting),
            (Duration::from_secs(10), Duration::from_secs(2))
        );
    }
}
