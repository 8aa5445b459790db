//! Configuration reload (SIGHUP): what of a re-read configuration file the running daemon
//! applies, and what needs a restart.
//!
//! Applied live: `[log] filter`, the `[pipeline]` table (batching, queue size, backpressure,
//! stop time, test hooks; not `dsp_threads`, whose threads start once) and the beds (`[[source]]` tables: added, removed, and restarted
//! when their settings changed; a restarted bed goes on numbering its windows where it
//! stopped). Not applied, logged as `needs restart: <field>`: `[site]`, `[runtime]`,
//! `[model]`, `[dsp]`, `[mqtt]` and `[metrics]`, whose bundle, execution providers, broker
//! session, listener and preprocessing are set up once at the start. A file that cannot be
//! read or is invalid changes nothing (the caller logs why).

use crate::config::Config;

/// What a reload does.
#[derive(Debug)]
pub struct ReloadPlan {
    /// Changed fields that need a restart (dotted names such as `metrics.listen`), not
    /// applied.
    pub needs_restart: Vec<String>,
    /// The configuration the daemon runs from now on: the new file's live parts over the
    /// running configuration's restart-only tables.
    pub config: Config,
}

/// Compares the running configuration with a re-read one (`*_text` are the files they were
/// read from, used to name the changed fields: the restart-only tables of the running
/// configuration are those of the file the daemon started with).
pub fn plan(running: &Config, running_text: &str, new: Config, new_text: &str) -> ReloadPlan {
    let old_tree: toml::Table = toml::from_str(running_text).unwrap_or_default();
    let new_tree: toml::Table = toml::from_str(new_text).unwrap_or_default();
    let mut needs_restart = Vec::new();
    for (table, differs) in [
        ("site", running.site != new.site),
        ("runtime", running.runtime != new.runtime),
        ("model", running.model != new.model),
        ("dsp", running.dsp != new.dsp),
        ("mqtt", running.mqtt != new.mqtt),
        ("metrics", running.metrics != new.metrics),
    ] {
        if !differs {
            continue;
        }
        let before = needs_restart.len();
        changed_fields(
            old_tree.get(table),
            new_tree.get(table),
            table,
            &mut needs_restart,
        );
        if needs_restart.len() == before {
            needs_restart.push(table.to_string());
        }
    }
    // The signal-processing threads are started once.
    if running.pipeline.dsp_threads != new.pipeline.dsp_threads {
        needs_restart.push("pipeline.dsp_threads".to_string());
    }
    let config = Config {
        log: new.log,
        pipeline: crate::pipeline::PipelineConfig {
            dsp_threads: running.pipeline.dsp_threads,
            ..new.pipeline
        },
        sources: new.sources,
        ..running.clone()
    };
    ReloadPlan {
        needs_restart,
        config,
    }
}

/// Dotted names of the keys that differ between two TOML values under `prefix`.
fn changed_fields(
    old: Option<&toml::Value>,
    new: Option<&toml::Value>,
    prefix: &str,
    out: &mut Vec<String>,
) {
    match (old, new) {
        (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                changed_fields(a.get(key), b.get(key), &format!("{prefix}.{key}"), out);
            }
        }
        (Some(toml::Value::Table(a)), None) | (None, Some(toml::Value::Table(a))) => {
            for key in a.keys() {
                out.push(format!("{prefix}.{key}"));
            }
        }
        (a, b) if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    const RUNNING: &str = "[metrics]\nlisten = \"127.0.0.1:9100\"\n\n[pipeline]\nqueue_windows = 64\n\n[[source]]\nkind = \"simulated\"\nbed = \"a\"\n\n[[source]]\nkind = \"simulated\"\nbed = \"b\"\n";

    #[test]
    fn live_tables_apply_and_the_others_are_named_and_kept() {
        let new_text = "[log]\nfilter = \"debug\"\n\n[model]\nbundle = \"elsewhere\"\n\n[mqtt]\nport = 1884\n\n[metrics]\nlisten = \"127.0.0.1:9200\"\n\n[pipeline]\nqueue_windows = 8\ndsp_threads = 3\n\n[[source]]\nkind = \"simulated\"\nbed = \"b\"\n\n[[source]]\nkind = \"simulated\"\nbed = \"c\"\n";
        let running = parse(RUNNING);
        let plan = plan(&running, RUNNING, parse(new_text), new_text);
        assert_eq!(
            plan.needs_restart,
            [
                "model.bundle",
                "mqtt.port",
                "metrics.listen",
                "pipeline.dsp_threads"
            ]
        );
        let c = &plan.config;
        assert_eq!(c.pipeline.queue_windows, 8);
        assert_eq!(c.pipeline.dsp_threads, None, "started once");
        assert_eq!(c.log.filter.as_deref(), Some("debug"));
        let beds: Vec<&str> = c.sources.iter().map(|s| s.bed()).collect();
        assert_eq!(beds, ["b", "c"]);
        // Not applied: still the running values.
        assert_eq!(c.model.bundle, running.model.bundle);
        assert_eq!(c.mqtt.port, running.mqtt.port);
        assert_eq!(c.metrics.listen, running.metrics.listen);
    }

    #[test]
    fn an_unchanged_file_needs_nothing_and_equal_values_spelled_out_are_no_change() {
        let running = parse(RUNNING);
        let same = plan(&running, RUNNING, parse(RUNNING), RUNNING);
        assert!(same.needs_restart.is_empty());
        // The default port written out is the same configuration.
        let spelled = format!("[mqtt]\nport = 1883\n{RUNNING}");
        let p = plan(&running, RUNNING, parse(&spelled), &spelled);
        assert!(p.needs_restart.is_empty(), "{:?}", p.needs_restart);
    }
}
