//! verify (in progress).
pub(crate) fn run(_a: crate::cli::VerifyArgs) -> Result<i32, String> {
    Err("verify not built yet".into())
}
