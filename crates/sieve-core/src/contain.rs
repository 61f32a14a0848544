//! Containing panics of third-party readers on damaged input.
//!
//! The Parquet and tokenizer readers are meant to return errors on malformed files, but fuzzing
//! (`tests/fuzz.rs`) found files on which they panic instead (arrow-buffer's "offset + len out
//! of bounds" while decoding damaged definition levels; tokenizers' decoder deserializer
//! unwrapping its own error). [`contained`] runs such a call, turns a
//! panic into an error message, and marks the thread while it runs so that a binary's panic
//! hook can stay silent about a panic that becomes a clear error ([`containing_panic`]).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `call`; a panic inside it comes back as `Err(message)` instead of unwinding further.
pub fn contained<T>(call: impl FnOnce() -> T) -> Result<T, String> {
    let was = CONTAINING.with(|c| c.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(call));
    CONTAINING.with(|c| c.set(was));
    outcome.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown failure".into())
    })
}

/// Whether the current thread is inside a [`contained`] call: a panic hook can skip printing,
/// because the panic will be reported as an error naming the input.
pub fn containing_panic() -> bool {
    CONTAINING.with(|c| c.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_the_mark_is_cleared() {
        assert_eq!(contained(|| 7), Ok(7));
        let caught = contained(|| -> u8 { panic!("offset {} out of bounds", 3) });
        assert_eq!(caught, Err("offset 3 out of bounds".to_string()));
        assert!(!containing_panic());
        assert_eq!(contained(containing_panic), Ok(true));
    }
}
