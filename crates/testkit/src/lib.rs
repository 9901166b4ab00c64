//! Testing tools for ADPA Resilience: simulated LLM providers with scripted faults, and
//! helpers that start a gateway in-process in front of them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(rust_2018_idioms)]

pub mod sim;
