//! (in progress)
use super::Config;
#[derive(Debug)]
pub struct ConfigError(pub String);
pub fn load(_path: &std::path::Path) -> Result<Config, ConfigError> { Err(ConfigError("todo".into())) }
pub fn from_str(_text: &str, _origin: &str) -> Result<Config, ConfigError> { Err(ConfigError("todo".into())) }
