//! The command line of the examples: the usage when the arguments are not understood, and
//! the exit code of a run, its error logged.
//!
//! Included by each example's `main.rs` with `#[path = "../common/cli.rs"]`.

use std::fmt::Display;
use std::process::ExitCode;

/// `[--addr HOST:PORT]`: the address given, else `default`; `None` for any other arguments.
#[allow(dead_code)] // the examples whose one option is `--addr` only
pub(crate) fn addr_only<'a>(args: &'a [String], default: &'a str) -> Option<&'a str> {
    match args {
        [] => Some(default),
        [flag, addr] if flag == "--addr" => Some(addr),
        _ => None,
    }
}

/// Prints `usage` on stderr: the exit code of arguments the example does not take.
pub(crate) fn usage(usage: &str) -> ExitCode {
    eprintln!("{usage}");
    ExitCode::from(2)
}

/// The exit code of a run: success, or failure with the error logged (`"{what} failed"`).
pub(crate) fn exit_code(what: &str, result: Result<(), impl Display>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{what} failed");
            ExitCode::FAILURE
        }
    }
}
