//! Fuzzes the WFDB header parser and signal decoder: the first input line chooses how the
//! rest splits into header text and data-file bytes. Any input must give Ok or Err, never a
//! panic, and never an allocation the data cannot back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meit::wfdb::{Header, decode_record};

fuzz_target!(|input: &[u8]| {
    let split = input.first().map_or(0, |&b| usize::from(b)).min(input.len());
    let (head, data) = input.split_at(split);
    let text = String::from_utf8_lossy(head);
    if let Ok(header) = Header::parse(&text)
        && let Ok(record) = decode_record(header, |_| Ok(data.to_vec()))
    {
        let _ = record.to_recording();
    }
});
