//! MySQL mode (in progress).
pub(crate) fn run(_a: crate::cli::MysqlArgs) -> Result<i32, String> {
    Err("mysql mode not built yet".into())
}
