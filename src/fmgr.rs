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

/// The result row of a function declared to return a composite type (OUT parameters or
/// RETURNS TABLE), formed from `values` and `nulls`.
///
/// # Safety
/// `fcinfo` must be the V1 call being executed, and `values`/`nulls` match its result type.
pub unsafe fn result_row(
    fcinfo: pg_sys::FunctionCallInfo,
    values: &mut [pg_sys::Datum],
    nulls: &mut [bool],
) -> pg_sys::Datum {
    let mut tupdesc: pg_sys::TupleDesc = std::ptr::null_mut();
    // SAFETY: forwarded from the caller; the descriptor is checked before it is used.
    unsafe {
        if pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut tupdesc)
            != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE
        {
            // Raised through pgrx, which unwinds the Rust frames above first.
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "function returning record called in context that cannot accept type record"
            );
        }
        let tupdesc = pg_sys::BlessTupleDesc(tupdesc);
        let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
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
