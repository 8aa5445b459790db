//! The pipeline: wires sources, the dsp stage, the inference engine and sinks for each bed.
//!
//! `meit run` builds one pipeline from the configuration. The stages land issue by issue;
//! this module is where they meet.
