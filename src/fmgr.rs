//! The V1 calling convention, by hand, for every SQL function of the extension.
//!
//! pgrx's `#[pg_extern]` converts arguments into Rust values (a `jsonb` into a `serde_json`
//! tree on the Rust heap) and raises errors through its panic machinery, which drops the
//! schema, table and column fields of an error and carries its text as UTF-8. Here each
//! function takes its arguments as Datums, does its work in [`finish`]'s closure, and any
//! error leaves through [`crate::report::Report::raise`] once everything the closure owned has
//! been dropped.

use pgrx::pg_sys;

use crate::report::Report;

/// An argument of a V1 call; `None` for SQL NULL.
pub type Arg = Option<pg_sys::Datum>;

/// Runs `body` on the call's arguments and returns its Datum (`None`: SQL NULL), or raises
/// its error after `body` and everything it owned are gone.
///
/// # Safety
/// `fcinfo` must be the V1 call being executed.
pub unsafe fn finish<E: Into<Report>>(
    fcinfo: pg_sys::FunctionCallInfo,
    body: impl FnOnce(&[Arg]) -> Result<Option<pg_sys::Datum>, E>,
) -> pg_sys::Datum {
    // SAFETY: Postgres passes `nargs` arguments; at most 4 here, so no allocation.
    let outcome = unsafe {
        let args = (*fcinfo).args.as_slice((*fcinfo).nargs as usize);
        let mut values: [Arg; 4] = [None; 4];
        for (value, arg) in values.iter_mut().zip(args) {
            *value = (!arg.isnull).then_some(arg.value);
        }
        body(&values[..args.len().min(4)])
    };
    match outcome {
        Ok(Some(datum)) => datum,
        Ok(None) => {
            // SAFETY: a V1 function signals SQL NULL through fcinfo.
            unsafe { (*fcinfo).isnull = true };
            pg_sys::Datum::from(0)
        }
        Err(error) => error.into().raise(),
    }
}

/// `Pg_finfo_record`s, which tell Postgres these are V1 functions.
macro_rules! v1_function_info {
    ($($finfo:ident),*) => {$(
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1_API: pgrx::pg_sys::Pg_finfo_record = pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1_API
        }
    )*};
}
pub(crate) use v1_function_info;
