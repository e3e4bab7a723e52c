//! The V1 calling convention, by hand, for every SQL function of the extension.
//!
//! pgrx's `#[pg_extern]` converts arguments into Rust values (a `jsonb` into a `serde_json`
//! tree on the Rust heap) and raises errors through its panic machinery, which drops the
//! schema, table and column fields of an error and carries its text as UTF-8. Here
//! [`v1_function!`] declares each entry point: its `Pg_finfo_record`, `#[pg_guard]`, and a
//! body that reads its arguments through [`Args`] and returns a `Result`. An error leaves
//! through [`crate::report::Report::raise`] only once the body and everything it owned have
//! been dropped, from the entry point's own frame: the one place an `ERROR` is raised.

use pgrx::pg_sys;

use crate::node::is_node;
use crate::report::Report;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("function returning record called in context that cannot accept type record")]
    NotComposite,
}

impl From<CallError> for Report {
    fn from(error: CallError) -> Self {
        Report::new(pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, error.to_string(), None, None)
    }
}

/// The arguments of a V1 call, read by position and type; `None` for SQL NULL or an argument
/// the call does not have (an older declaration of the function).
#[derive(Clone, Copy)]
pub struct Args {
    fcinfo: pg_sys::FunctionCallInfo,
}

impl Args {
    /// # Safety
    /// `fcinfo` must be the V1 call being executed.
    pub unsafe fn new(fcinfo: pg_sys::FunctionCallInfo) -> Self {
        Self { fcinfo }
    }

    pub fn fcinfo(&self) -> pg_sys::FunctionCallInfo {
        self.fcinfo
    }

    /// Argument `n` as a Datum.
    pub fn datum(&self, n: usize) -> Option<pg_sys::Datum> {
        // SAFETY: `fcinfo` is the current call (see `new`); it has `nargs` arguments.
        unsafe {
            let args = (*self.fcinfo).args.as_slice((*self.fcinfo).nargs as usize);
            args.get(n).filter(|arg| !arg.isnull).map(|arg| arg.value)
        }
    }

    /// An `oid` or `regclass` argument.
    pub fn oid(&self, n: usize) -> Option<pg_sys::Oid> {
        self.datum(n).map(|d| pg_sys::Oid::from(d.value() as u32))
    }

    /// A `bigint` argument (pass-by-value on every platform Postgres 15+ supports).
    pub fn int8(&self, n: usize) -> Option<i64> {
        self.datum(n).map(|d| d.value() as i64)
    }

    /// The trigger call's `TriggerData`, if this is a call from the trigger manager.
    pub fn trigger_data(&self) -> Option<*mut pg_sys::TriggerData> {
        // SAFETY: `fcinfo` is the current call; a trigger call's context is a TriggerData
        // node, which is what CALLED_AS_TRIGGER tests.
        unsafe {
            let context = (*self.fcinfo).context;
            is_node(context, pg_sys::NodeTag::T_TriggerData).then_some(context as *mut pg_sys::TriggerData)
        }
    }
}

/// Runs `body` and returns its Datum (`None`: SQL NULL), or raises its error after `body` and
/// everything it owned are gone. The error reports the location of the entry point.
///
/// # Safety
/// `fcinfo` must be the V1 call being executed.
#[track_caller]
pub unsafe fn finish<E: Into<Report>>(
    fcinfo: pg_sys::FunctionCallInfo,
    body: impl FnOnce(Args) -> Result<Option<pg_sys::Datum>, E>,
) -> pg_sys::Datum {
    // SAFETY: forwarded from the caller.
    match body(unsafe { Args::new(fcinfo) }) {
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
/// RETURNS TABLE), formed from `values` and `nulls`; an error when the call's context expects
/// no such composite (as Postgres' own functions check `get_call_result_type`).
///
/// # Safety
/// `fcinfo` must be the V1 call being executed, and `values`/`nulls` match its result type.
pub unsafe fn result_row(
    fcinfo: pg_sys::FunctionCallInfo,
    values: &mut [pg_sys::Datum],
    nulls: &mut [bool],
) -> Result<pg_sys::Datum, CallError> {
    let mut tupdesc: pg_sys::TupleDesc = std::ptr::null_mut();
    // SAFETY: forwarded from the caller; the descriptor is used only when the call says it
    // returns a composite, and has as many attributes as `values`.
    unsafe {
        if pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut tupdesc)
            != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE
            || (*tupdesc).natts as usize != values.len()
        {
            return Err(CallError::NotComposite);
        }
        let tupdesc = pg_sys::BlessTupleDesc(tupdesc);
        let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        Ok(pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data))
    }
}

/// The SQL declarations of a V1 function's symbol, as its [`v1_function!`] states them: each
/// `name(argument types) -> result type`, the types as `format_type` names them, a composite
/// result as the list of its column types, a set-returning one prefixed `SETOF`. Nothing but
/// a test ties a symbol to the declarations in `sql/` (the `#[pg_test]` in `pg_tests.rs`
/// compares these with `pg_proc`).
#[cfg(any(test, feature = "pg_test"))]
pub struct Declaration {
    pub symbol: &'static str,
    /// Every declaration the symbol accepts, older releases' included.
    pub signatures: &'static [&'static str],
}

/// Declares a V1 SQL function: its `Pg_finfo_record` (named `finfo`), the SQL declarations
/// that call it (`declared`, see [`Declaration`]; for tests, as `name::DECLARATION`), the
/// `#[pg_guard]`ed `extern "C-unwind"` symbol `name` that `sql/*.sql` names, and its body, a
/// block that reads its arguments through `args` ([`Args`]) and evaluates to
/// `Result<Option<Datum>, error>` (`None`: SQL NULL). The symbol names are stable: released
/// install scripts store them.
macro_rules! v1_function {
    (
        $(#[$doc:meta])*
        $finfo:ident,
        declared [$($signature:literal),+ $(,)?],
        fn $name:ident($args:ident) -> $error:ty $body:block
    ) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1_API: pgrx::pg_sys::Pg_finfo_record = pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1_API
        }

        $(#[$doc])*
        ///
        /// # Safety
        /// Called by Postgres through the V1 calling convention, with the arguments of its
        /// declaration in `sql/`.
        #[pgrx::pg_guard]
        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $name(fcinfo: pgrx::pg_sys::FunctionCallInfo) -> pgrx::pg_sys::Datum {
            let body = |$args: $crate::fmgr::Args| -> ::core::result::Result<Option<pgrx::pg_sys::Datum>, $error> { $body };
            // SAFETY: Postgres passes the V1 call being executed.
            unsafe { $crate::fmgr::finish(fcinfo, body) }
        }

        // The same name as the function's, in the type namespace: `name::DECLARATION`.
        #[cfg(any(test, feature = "pg_test"))]
        #[doc(hidden)]
        pub mod $name {
            pub const DECLARATION: $crate::fmgr::Declaration =
                $crate::fmgr::Declaration { symbol: stringify!($name), signatures: &[$($signature),+] };
        }
    };
}
pub(crate) use v1_function;
