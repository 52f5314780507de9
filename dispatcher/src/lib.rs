//! reprise-dispatcher: reads a recording, schedules every request on a time wheel and streams
//! it to replayers over gRPC.
//!
//! # Layout
//! The data path, in order: [`fetchers`] read raw units (lines, GoReplay records) from the
//! source → [`analyzers`] parse them into [`record::Record`]s → [`fetchers::merge`] merges
//! sources by timestamp and puts them in order within the reorder window → [`timewheel`]
//! assigns each record its due instant and copies (speed, rate, begin/end) → [`proxy`] picks a
//! replayer → [`fleet`] holds the replayers, their credits and acks → [`service`] streams
//! batches over gRPC and merges the reports. [`job`] runs the whole, [`admin`] serves the HTTP
//! API, [`accounting`] counts every record and [`report`] renders the results.

pub mod accounting;
pub mod admin;
pub mod analyzers;
pub mod config;
pub mod dispatch;
pub mod fetchers;
pub mod fleet;
pub mod history;
pub mod job;
pub mod metrics;
pub mod proxy;
pub mod record;
pub mod report;
pub mod report_csv;
pub mod report_html;
pub mod reporters;
pub mod server;
pub mod service;
pub mod thresholds;
pub mod timewheel;
