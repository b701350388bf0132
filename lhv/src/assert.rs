//! `TEST_ASSERT`: a failed check prints
//! `TEST_ASSERT failed: <what>, expected <x>, got <y>` with the CPU and halts
//! that CPU (the harness fails the run on that line).

/// Reports a failed check and halts this CPU.
pub fn fail(
    what: ::core::fmt::Arguments,
    expected: ::core::fmt::Arguments,
    got: ::core::fmt::Arguments,
) -> ! {
    shared::cpu_println!("TEST_ASSERT failed: {what}, expected {expected}, got {got}");
    shared::console::flush();
    shared::x86::cli();
    shared::x86::halt_forever()
}

/// `test_assert!(cond, "what", expected, got)`: checks `cond`; on failure
/// reports `what` with the two values (any `Debug`-printable value, printed
/// in hex where it is an integer: use `{:#x}` formatting via `hex(...)`).
macro_rules! test_assert {
    ($cond:expr, $what:expr, $expected:expr, $got:expr $(,)?) => {
        if !$cond {
            $crate::assert::fail(
                format_args!("{}", $what),
                format_args!("{:x?}", $expected),
                format_args!("{:x?}", $got),
            );
        }
    };
}

/// `test_assert_eq!(got, expected, "what")`.
macro_rules! test_assert_eq {
    ($got:expr, $expected:expr, $what:expr $(,)?) => {{
        let (got, expected) = (&$got, &$expected);
        $crate::assert::test_assert!(got == expected, $what, expected, got);
    }};
}

pub(crate) use {test_assert, test_assert_eq};
