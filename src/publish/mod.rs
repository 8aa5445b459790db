//! Publishing: sinks that deliver generated reports (MQTT, standard output).
//!
//! The MQTT sink with a durable outbox, TLS and FHIR payloads lands with the publishing issue.
